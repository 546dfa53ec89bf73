"""ROS 2 wire protocol over Eclipse Cyclone DDS, without ROS 2.

What rmw_cyclonedds puts on the wire, reproduced here:

* topic ``/ns/name`` is the DDS topic ``rt/ns/name``;
* message ``pkg/msg/Type`` is the DDS type ``pkg::msg::dds_::Type_``;
* the payload is plain little-endian CDR (XCDR1, encapsulation ``00 01 00 00``), exactly what
  ``rmw_serialize`` and rosbag2 produce; we serialise it with rosbags
  (``TYPESTORE.serialize_cdr``), so the bytes are the ones a bag holds;
* each reader and writer carries ``USER_DATA`` ``typehash=RIHS01_<hex>;`` (Jazzy and later parse it;
  Humble ignores it), the participant carries ``enclave=/;``.

The DDS type registered with Cyclone is a faithful IDL struct generated from the rosbags field
definitions (so its XTypes type information describes the real layout), but its ``serialize`` /
``deserialize`` are replaced by a pass-through of the CDR bytes: byte payloads (images, audio) stay
``bytes``/numpy buffers end to end and are never packed into Python lists of ints. Cyclone
checks the bytes against that struct when writing and on receipt (a payload that is not valid CDR
for the type is refused by ``write`` and dropped by a receiving reader), so the CDR sent here is
verified against the real layout, and structurally broken input never reaches a node.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import make_idl_struct, types as t
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from ...bag.messages import TYPESTORE
from ..cdr import CDR_LE_HEADER, decode, encode, normalize_cdr, pad_cdr, strip_cdr_padding  # noqa: F401

_BASE = {
    "bool": bool, "byte": t.byte, "char": t.uint8, "int8": t.int8, "uint8": t.uint8,
    "int16": t.int16, "uint16": t.uint16, "int32": t.int32, "uint32": t.uint32,
    "int64": t.int64, "uint64": t.uint64, "float32": t.float32, "float64": t.float64,
    "string": str, "wstring": str, "octet": t.byte,
}


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------
def dds_topic_name(topic: str) -> str:
    """``/camera/image_raw`` -> ``rt/camera/image_raw`` (rmw's ``ros_topic_prefix``)."""
    if not topic.startswith("/"):
        topic = "/" + topic
    return "rt" + topic


def resolve(namespace: str, name: str) -> str:
    """ROS name resolution for absolute and relative names (no remapping, no ``~``)."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    return f"{ns}/{name}"


def dds_type_name(msgtype: str) -> str:
    """``sensor_msgs/msg/Image`` -> ``sensor_msgs::msg::dds_::Image_``."""
    pkg, kind, name = msgtype.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def type_hash(msgtype: str, store=TYPESTORE) -> str:
    """RIHS01 type hash as Jazzy computes it (``RIHS01_<64 hex>``)."""
    return store.hash_rihs01(msgtype)


def user_data(msgtype: str, store=TYPESTORE) -> bytes:
    """Endpoint USER_DATA exactly as rmw_cyclonedds writes it."""
    return f"typehash={type_hash(msgtype, store)};".encode()


# --------------------------------------------------------------------------------------------
# DDS types: faithful IDL structs with pass-through serialisation
# --------------------------------------------------------------------------------------------
_TYPES: dict[str, type] = {}
_LOCK = threading.Lock()


def _field_type(desc: tuple, store) -> Any:
    node, spec = desc
    kind = int(node)
    if kind == 1:  # BASE
        name, bound = spec
        if name in ("string", "wstring") and bound:
            return t.bounded_str[bound]
        return _BASE[name]
    if kind == 2:  # NAME (nested message)
        return _struct(spec, store)
    if kind == 3:  # ARRAY
        sub, length = spec
        return t.array[_field_type(sub, store), length]
    if kind == 4:  # SEQUENCE
        sub, bound = spec
        return t.sequence[_field_type(sub, store), bound] if bound else t.sequence[_field_type(sub, store)]
    raise ValueError(f"unsupported field type {desc}")


def _struct(msgtype: str, store) -> type:
    cls = _TYPES.get(msgtype)
    if cls is not None:
        return cls
    _, fields = store.fielddefs[msgtype]
    members = {name: _field_type(desc, store) for name, desc in fields}
    if not members:  # ROS adds this member to empty messages
        members = {"structure_needs_at_least_one_member": t.uint8}
    cls = make_idl_struct(msgtype.replace("/", "_"), dds_type_name(msgtype), members)
    _TYPES[msgtype] = cls
    return cls


def raw_type(msgtype: str, store=TYPESTORE) -> type:
    """Cyclone data type for ``msgtype`` whose samples are ``obj.cdr`` bytes."""
    with _LOCK:
        key = "raw:" + msgtype
        cls = _TYPES.get(key)
        if cls is not None:
            return cls
        cls = _struct(msgtype, store)

        def serialize(self, buffer=None, endianness=None, use_version_2=None) -> bytes:
            return self.cdr

        def deserialize(klass, data, has_header=True, use_version_2=None):
            obj = object.__new__(klass)
            obj.cdr = data
            return obj

        def deserialize_key(klass, data, has_header=True, use_version_2=None):
            return object.__new__(klass)  # keyless: invalid samples carry nothing (no .cdr)

        cls.serialize = serialize
        cls.deserialize = classmethod(deserialize)
        cls.deserialize_key = classmethod(deserialize_key)
        _TYPES[key] = cls
        return cls


def raw_sample(cls: type, cdr: bytes) -> Any:
    obj = object.__new__(cls)
    obj.cdr = cdr
    return obj


# --------------------------------------------------------------------------------------------
# QoS profiles (rclpy's names)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QosProfile:
    reliable: bool = True
    depth: int = 10
    transient_local: bool = False


QOS_DEFAULT = QosProfile(True, 10, False)  # rclpy QoSProfile(depth=10)
QOS_SENSOR_DATA = QosProfile(False, 5, False)  # rclpy qos_profile_sensor_data
QOS_LATCHED = QosProfile(True, 1, True)  # /tf_static, AudioInfo: TRANSIENT_LOCAL, keep last 1


def _dds_qos(profile: QosProfile, msgtype: str, store) -> Qos:
    return Qos(
        Policy.Reliability.Reliable(duration(seconds=1)) if profile.reliable
        else Policy.Reliability.BestEffort,
        Policy.Durability.TransientLocal if profile.transient_local else Policy.Durability.Volatile,
        Policy.History.KeepLast(profile.depth),
        # rmw_cyclonedds only speaks XCDR1
        Policy.DataRepresentation(use_cdrv0_representation=True),
        Policy.Userdata(user_data(msgtype, store)),
    )


# --------------------------------------------------------------------------------------------
# A node: participant, publishers, subscriptions, one dispatch thread
# --------------------------------------------------------------------------------------------
class Publisher:
    def __init__(self, node: "DdsNode", topic: str, msgtype: str, qos: QosProfile):
        self.topic, self.msgtype, self.store = topic, msgtype, node.store
        self._cls = raw_type(msgtype, node.store)
        self._topic = node._topic(topic, msgtype)
        self._writer = DataWriter(node.participant, self._topic, qos=_dds_qos(qos, msgtype, node.store))
        self.published = 0

    def publish(self, msg: Any) -> None:
        self.publish_cdr(encode(msg, self.msgtype, self.store))

    def publish_cdr(self, cdr: bytes) -> None:
        """Publish pre-serialised CDR (e.g. straight from a bag)."""
        self._writer.write(raw_sample(self._cls, pad_cdr(bytes(cdr))))
        self.published += 1

    def matched(self) -> int:
        return len(self._writer.get_matched_subscriptions())


class Subscription:
    def __init__(self, node: "DdsNode", topic: str, msgtype: str, callback: Callable,
                 qos: QosProfile, raw: bool = False, latest_only: bool = False):
        self.topic, self.msgtype, self.store = topic, msgtype, node.store
        self.callback, self.raw, self.latest_only = callback, raw, latest_only
        self.skipped = 0  # latest_only: older samples not delivered
        raw_type(msgtype, node.store)
        self._topic = node._topic(topic, msgtype)
        self._reader = DataReader(node.participant, self._topic, qos=_dds_qos(qos, msgtype, node.store))
        self.condition = ReadCondition(self._reader, SampleState.Any | ViewState.Any | InstanceState.Any)
        self.received = 0
        self.malformed = 0

    def take(self, max_n: int = 64) -> list[Any]:
        return self._reader.take(N=max_n)

    def matched(self) -> int:
        return len(self._reader.get_matched_publications())


class DdsNode:
    """A ROS-2-compatible DDS participant with rclpy-like create_publisher/create_subscription.

    Callbacks run on the thread that calls :meth:`spin_once` / :meth:`spin`, one at a time.
    ``on_malformed(subscription, error)`` is called for payloads that do not deserialise.
    """

    def __init__(self, name: str, domain_id: int | None = None, store=TYPESTORE,
                 on_malformed: Callable[[Subscription, Exception], None] | None = None):
        """``domain_id`` None: ``$ROS_DOMAIN_ID`` (else 0), as rmw does."""
        if domain_id is None:
            domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
        self.name = name
        self.store = store
        self.participant = DomainParticipant(domain_id, qos=Qos(Policy.Userdata(b"enclave=/;")))
        self._topics: dict[str, Topic] = {}
        self.subscriptions: list[Subscription] = []
        self.publishers: list[Publisher] = []
        self._waitset = WaitSet(self.participant)
        self.on_malformed = on_malformed

    def _topic(self, topic: str, msgtype: str) -> Topic:
        name = dds_topic_name(topic)
        tp = self._topics.get(name)
        if tp is None:
            tp = Topic(self.participant, name, raw_type(msgtype, self.store))
            self._topics[name] = tp
        return tp

    def create_publisher(self, msgtype: str, topic: str, qos: QosProfile = QOS_DEFAULT) -> Publisher:
        pub = Publisher(self, topic, msgtype, qos)
        self.publishers.append(pub)
        return pub

    def create_subscription(self, msgtype: str, topic: str, callback: Callable,
                            qos: QosProfile = QOS_DEFAULT, raw: bool = False,
                            latest_only: bool = False) -> Subscription:
        """``callback(msg)``; with ``raw=True`` it gets the CDR bytes instead (no decoding).

        ``latest_only``: of the samples waiting when the node gets to them, deliver only the
        newest (the others are counted in ``subscription.skipped``): a node that falls behind a
        camera then processes the current frame instead of a queue of stale ones.
        """
        sub = Subscription(self, topic, msgtype, callback, qos, raw, latest_only)
        self._waitset.attach(sub.condition)
        self.subscriptions.append(sub)
        return sub

    def spin_once(self, timeout_s: float = 0.1) -> int:
        """Wait for data, then dispatch everything available; returns the number of callbacks."""
        self._waitset.wait(duration(seconds=timeout_s))
        n = 0
        for sub in self.subscriptions:
            while True:
                samples = sub.take()
                if not samples:
                    break
                if sub.latest_only:
                    valid = [s for s in samples if getattr(s, "cdr", None) is not None]
                    while True:  # drain: only the very newest survives
                        more = [s for s in sub.take() if getattr(s, "cdr", None) is not None]
                        if not more:
                            break
                        valid += more
                    sub.skipped += max(len(valid) - 1, 0)
                    samples = valid[-1:]
                for s in samples:
                    cdr = getattr(s, "cdr", None)
                    if cdr is None:  # invalid sample (dispose/unregister notification)
                        continue
                    sub.received += 1
                    if sub.raw:
                        sub.callback(cdr)
                    else:
                        try:
                            msg = decode(cdr, sub.msgtype, self.store)
                        except ValueError as exc:
                            sub.malformed += 1
                            if self.on_malformed is not None:
                                self.on_malformed(sub, exc)
                            continue
                        sub.callback(msg)
                    n += 1
        return n

    def spin(self, stop: threading.Event, timeout_s: float = 0.1) -> None:
        while not stop.is_set():
            self.spin_once(timeout_s)

    def close(self) -> None:
        # Cyclone deletes children with the participant.
        try:
            self.participant.__del__()
        except Exception:
            pass


def stop_after(duration_s: float, stop: threading.Event) -> None:
    """Set ``stop`` after ``duration_s`` seconds (the shells' ``--duration``), from a daemon
    timer: a pending timer must not keep the process alive after Ctrl-C."""
    if duration_s > 0:
        timer = threading.Timer(duration_s, stop.set)
        timer.daemon = True
        timer.start()
