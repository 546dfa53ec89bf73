"""Plain data types shared by the core, the replay tool and the ROS layers.

Conventions (see docs/ARCHITECTURE.md):
* Stamps are integer nanoseconds of the data's clock (audio sample time, image stamp).
* Angles are radians. Azimuth is counter-clockwise from +x of the array frame, elevation is up
  from the x-y plane (REP-103: x forward, y left, z up). Unit vector:
  ``u = [cos(el) cos(az), cos(el) sin(az), sin(el)]``.
* Audio is float32 in [-1, 1], shaped ``(n_channels, n_samples)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NS_PER_S = 1_000_000_000


def direction_vector(azimuth: float | np.ndarray, elevation: float | np.ndarray) -> np.ndarray:
    """Unit vector(s) ``[..., 3]`` for azimuth/elevation in radians (array frame)."""
    az = np.asarray(azimuth, dtype=np.float64)
    el = np.asarray(elevation, dtype=np.float64)
    ce = np.cos(el)
    return np.stack([ce * np.cos(az), ce * np.sin(az), np.sin(el)], axis=-1)


def vector_to_azel(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation (radians) of vector(s) ``[..., 3]`` (need not be unit length)."""
    v = np.asarray(v, dtype=np.float64)
    az = np.arctan2(v[..., 1], v[..., 0])
    el = np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1]))
    return az, el


def angular_distance(az1, el1, az2, el2) -> np.ndarray:
    """Great-circle angle (radians) between two directions; broadcasts."""
    c = (np.sin(el1) * np.sin(el2)
         + np.cos(el1) * np.cos(el2) * np.cos(np.asarray(az1) - np.asarray(az2)))
    return np.arccos(np.clip(c, -1.0, 1.0))


def angular_distance_scalar(az1: float, el1: float, az2: float, el2: float) -> float:
    """:func:`angular_distance` for Python floats (math, not numpy: the tracker and the peak
    ranking call it per pair per frame, where numpy's call overhead would dominate)."""
    c = (math.sin(el1) * math.sin(el2)
         + math.cos(el1) * math.cos(el2) * math.cos(az1 - az2))
    return math.acos(min(max(c, -1.0), 1.0))


def wrap_angle(a):
    """Wrap radians to (-pi, pi]."""
    return -((-np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi)


@dataclass(frozen=True)
class AudioWindow:
    """A contiguous block of multichannel audio.

    ``stamp_ns`` is the time of the first sample; sample ``k`` is at
    ``stamp_ns + round(k * 1e9 / sample_rate)``.
    """

    samples: np.ndarray  # (n_channels, n_samples) float32
    stamp_ns: int
    sample_rate: int

    @property
    def n_channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def n_samples(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / float(self.sample_rate)

    @property
    def center_stamp_ns(self) -> int:
        return self.stamp_ns + int(round(0.5 * self.n_samples * NS_PER_S / self.sample_rate))

    @property
    def end_stamp_ns(self) -> int:
        """Time just after the last sample."""
        return self.stamp_ns + int(round(self.n_samples * NS_PER_S / self.sample_rate))


@dataclass(frozen=True)
class DoaPeak:
    """One direction-of-arrival estimate."""

    azimuth: float  # rad
    elevation: float  # rad
    confidence: float  # [0, 1]

    @property
    def direction(self) -> np.ndarray:
        return direction_vector(self.azimuth, self.elevation)


@dataclass(frozen=True)
class DoaFrame:
    """DoA output for one audio window."""

    stamp_ns: int
    doa_map: np.ndarray  # (n_elevation, n_azimuth) float32, >= 0, max-normalised to 1
    azimuths: np.ndarray  # (n_azimuth,) rad, ascending
    elevations: np.ndarray  # (n_elevation,) rad, ascending
    peaks: tuple[DoaPeak, ...]
    voice_probability: float
    voice_active: bool


@dataclass(frozen=True)
class Detection:
    """What the tracker consumes: a direction, optionally a 3-D position (array frame, metres)."""

    azimuth: float
    elevation: float
    confidence: float
    position: np.ndarray | None = None  # (3,) when range is known (e.g. from the camera)


@dataclass(frozen=True)
class TrackState:
    """A tracked speaker, as published."""

    track_id: int
    azimuth: float  # rad
    elevation: float  # rad
    azimuth_rate: float  # rad/s
    elevation_rate: float  # rad/s
    covariance: np.ndarray  # (4, 4) over [az, el, az_rate, el_rate]
    confidence: float  # [0, 1]
    speaking: bool  # updated by a detection within the tracker's speaking window
    age_s: float
    position: np.ndarray | None = None  # (3,) metres in the array frame, when range is known
    position_covariance: np.ndarray | None = None  # (3, 3)

    @property
    def direction(self) -> np.ndarray:
        return direction_vector(self.azimuth, self.elevation)


@dataclass(frozen=True)
class ImageFrame:
    """A camera image (BGR uint8, ``(H, W, 3)``) with its stamp."""

    image: np.ndarray
    stamp_ns: int


@dataclass
class PipelineOutput:
    """Everything the Pipeline produces for one step, stamped from the data."""

    stamp_ns: int
    doa: DoaFrame
    tracks: tuple[TrackState, ...]
    heatmap: np.ndarray | None = None  # float32 in [0, 1], image-aligned, fusion.working_shape
    fused_heatmap: np.ndarray | None = None  # heatmap x projected DoA likelihood
    av_confidence: float | None = None  # audio-visual "sounding and on-screen" score
    timings_s: dict[str, float] = field(default_factory=dict)
    image: ImageFrame | None = None  # the input frame that drove this step, if any
