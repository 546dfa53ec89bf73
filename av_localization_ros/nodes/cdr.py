"""CDR <-> rosbags messages, as ROS 2 puts them on the wire (ROS-free, DDS-free).

Shared by the rclpy shells (which publish and take serialized bytes) and the Cyclone DDS shells.
"""
from __future__ import annotations

from typing import Any

from ..bag.messages import TYPESTORE

CDR_LE_HEADER = b"\x00\x01\x00\x00"


def encode(msg: Any, msgtype: str, store=TYPESTORE) -> bytes:
    """CDR bytes of ``msg`` as rmw_cyclonedds writes them (padding recorded in the header)."""
    data = store.serialize_cdr(msg, msgtype)
    return pad_cdr(bytes(data))


def pad_cdr(data: bytes) -> bytes:
    """Pad to a multiple of 4 and record the pad count in the options' low bits (XTypes 7.6.3.1.2),
    as Cyclone does; a pass-through when already aligned."""
    pad = (-len(data)) % 4
    if not pad:
        return data
    return data[:3] + bytes([(data[3] & 0xFC) | pad]) + data[4:] + b"\0" * pad


def strip_cdr_padding(data: bytes | memoryview) -> memoryview:
    mv = memoryview(data)
    pad = mv[3] & 0x03 if len(mv) >= 4 else 0
    return mv[:len(mv) - pad] if pad else mv


def normalize_cdr(data: bytes | memoryview) -> bytes:
    """The CDR as rosbag2 stores it: wire padding removed, options cleared."""
    mv = strip_cdr_padding(data)
    if len(mv) < 4:
        return bytes(mv)
    return bytes(mv[:2]) + b"\x00\x00" + bytes(mv[4:])


def decode(data: bytes | memoryview, msgtype: str, store=TYPESTORE) -> Any:
    """rosbags message from CDR bytes; raises ValueError on malformed data."""
    mv = strip_cdr_padding(data)
    if len(mv) < 4 or bytes(mv[:2]) not in (b"\x00\x01", b"\x00\x00"):
        raise ValueError("not a CDR payload (bad encapsulation header)")
    if bytes(mv[:2]) == b"\x00\x00":
        raise ValueError("big-endian CDR is not supported")
    try:
        return store.deserialize_cdr(bytes(mv[:len(mv)]), msgtype)
    except Exception as exc:  # rosbags raises assorted errors on truncated data
        raise ValueError(f"malformed {msgtype}: {type(exc).__name__}: {exc}") from None


