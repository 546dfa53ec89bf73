"""Ground-truth format for scene bags (documented in docs/ground_truth.md).

Ground truth travels *inside* the bag on topic ``/ground_truth/speakers`` as
``std_msgs/msg/String`` messages whose ``data`` is one JSON object per sample, so that anyone
can add it to their own recording with any rosbag2 writer. The bag's receive time and the
``stamp_ns`` field are the data time the sample describes (the same clock as the audio and
image stamps). Example::

    {"version": 1, "stamp_ns": 1700000000123000000, "frame_id": "mic_array",
     "speakers": [{"id": 1, "position": [1.8, 0.4, 0.1], "azimuth_deg": 12.5,
                   "elevation_deg": 3.1, "active": true, "box": [310, 120, 380, 300]}]}

``position`` is metres in ``frame_id`` (the array frame); ``azimuth_deg``/``elevation_deg``
follow the package's DoA convention and may be given without ``position``; ``active`` is
whether the speaker is talking at that instant; ``box`` is ``[u_min, v_min, u_max, v_max]``
pixels in the camera image, or null when off-screen / no camera.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

GROUND_TRUTH_TOPIC = "/ground_truth/speakers"
GROUND_TRUTH_VERSION = 1


@dataclass(frozen=True)
class SpeakerTruth:
    speaker_id: int
    azimuth: float  # rad
    elevation: float  # rad
    active: bool
    position: tuple[float, float, float] | None = None
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class GroundTruthSample:
    stamp_ns: int
    speakers: tuple[SpeakerTruth, ...] = field(default_factory=tuple)
    frame_id: str = "mic_array"

    def to_json(self) -> str:
        return json.dumps({
            "version": GROUND_TRUTH_VERSION,
            "stamp_ns": int(self.stamp_ns),
            "frame_id": self.frame_id,
            "speakers": [{
                "id": int(s.speaker_id),
                "position": None if s.position is None else [float(v) for v in s.position],
                "azimuth_deg": float(np.rad2deg(s.azimuth)),
                "elevation_deg": float(np.rad2deg(s.elevation)),
                "active": bool(s.active),
                "box": None if s.box is None else [float(v) for v in s.box],
            } for s in self.speakers],
        })

    @classmethod
    def from_json(cls, text: str) -> "GroundTruthSample":
        """Parse one sample (docs/ground_truth.md); ValueError for anything else, including
        non-finite numbers and positions / boxes of the wrong length."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("a ground-truth sample must be a JSON object")
        if d.get("version") != GROUND_TRUTH_VERSION:
            raise ValueError(f"unsupported ground-truth version {d.get('version')!r}")
        if not isinstance(d.get("speakers"), list):
            raise ValueError("'speakers' must be a list")
        stamp_ns = _integer(d.get("stamp_ns"), "stamp_ns")  # a float loses nanoseconds
        frame_id = d.get("frame_id", "mic_array")
        if not isinstance(frame_id, str):
            raise ValueError(f"frame_id must be a string, got {frame_id!r}")
        speakers = []
        for s in d["speakers"]:
            if not isinstance(s, dict):
                raise ValueError("each speaker must be a JSON object")
            active = s.get("active", True)
            if not isinstance(active, bool):  # "false" would be truthy
                raise ValueError(f"active must be true or false, got {active!r}")
            pos = _finite(s.get("position"), 3, "position")
            if s.get("azimuth_deg") is not None:
                az = np.deg2rad(_finite(s["azimuth_deg"], None, "azimuth_deg"))
                el_deg = s.get("elevation_deg")
                el = np.deg2rad(0.0 if el_deg is None else _finite(el_deg, None, "elevation_deg"))
            elif pos is not None:
                az = np.arctan2(pos[1], pos[0])
                el = np.arctan2(pos[2], np.hypot(pos[0], pos[1]))
            else:
                raise ValueError("a speaker needs azimuth_deg or position")
            speakers.append(SpeakerTruth(
                speaker_id=_integer(s.get("id"), "id"), azimuth=float(az), elevation=float(el),
                active=active, position=pos, box=_finite(s.get("box"), 4, "box")))
        return cls(stamp_ns=stamp_ns, speakers=tuple(speakers), frame_id=frame_id)


def _integer(value, name: str) -> int:
    """A JSON integer (not a float, not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


def _finite(value, length: int | None, name: str):
    """``value`` as a float (``length`` None) or a tuple of ``length`` floats, all finite;
    None stays None."""
    if value is None:
        return None
    if length is None:
        out = float(value)
        ok = math.isfinite(out)
    else:
        if not isinstance(value, (list, tuple)) or len(value) != length:
            raise ValueError(f"{name} must be a list of {length} numbers, got {value!r}")
        out = tuple(float(v) for v in value)
        ok = all(math.isfinite(v) for v in out)
    if not ok:
        raise ValueError(f"{name} is not finite: {value!r}")
    return out
