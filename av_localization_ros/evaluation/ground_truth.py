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
        d = json.loads(text)
        if d.get("version") != GROUND_TRUTH_VERSION:
            raise ValueError(f"unsupported ground-truth version {d.get('version')!r}")
        speakers = []
        for s in d["speakers"]:
            pos = s.get("position")
            if "azimuth_deg" in s:
                az, el = np.deg2rad(s["azimuth_deg"]), np.deg2rad(s.get("elevation_deg", 0.0))
            elif pos is not None:
                az = np.arctan2(pos[1], pos[0])
                el = np.arctan2(pos[2], np.hypot(pos[0], pos[1]))
            else:
                raise ValueError("a speaker needs azimuth_deg or position")
            speakers.append(SpeakerTruth(
                speaker_id=int(s["id"]), azimuth=float(az), elevation=float(el),
                active=bool(s.get("active", True)),
                position=None if pos is None else tuple(float(v) for v in pos),
                box=None if s.get("box") is None else tuple(float(v) for v in s["box"])))
        return cls(stamp_ns=int(d["stamp_ns"]), speakers=tuple(speakers),
                   frame_id=d.get("frame_id", "mic_array"))
