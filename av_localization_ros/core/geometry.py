"""Microphone-array geometry in the array frame (REP-103: x forward, y left, z up; metres).

A geometry is an ``(M, 3)`` float array of microphone positions, row ``m`` being the
position of the ``m``-th channel of the device's stream. Presets are the vendors' nominal
layouts expressed in that frame with the array centre at the origin; a user whose channel
order or mounting differs passes ``mic_positions`` (a flat ``[x0, y0, z0, x1, ...]`` list,
since ROS parameters cannot nest lists) instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEED_OF_SOUND_M_S = 343.0


def circular_array(n_mics: int, radius_m: float, start_deg: float = 0.0,
                   center_mic: bool = False, clockwise: bool = False) -> np.ndarray:
    """Uniform circular array in the x-y plane.

    Mic ``k`` sits at azimuth ``phi_k = start_deg + s 360 k / n_mics`` (counter-clockwise from
    +x; ``s = -1`` when the channels go round ``clockwise``): ``p_k = r [cos(phi_k),
    sin(phi_k), 0]``. With ``center_mic`` a mic at the origin is prepended (channel 0), as on
    the miniDSP UMA-8 and the MATRIX Voice.
    """
    step = -360.0 if clockwise else 360.0
    phi = np.deg2rad(start_deg + step * np.arange(n_mics) / n_mics)
    ring = np.stack([radius_m * np.cos(phi), radius_m * np.sin(phi), np.zeros(n_mics)], axis=1)
    if center_mic:
        ring = np.vstack([np.zeros((1, 3)), ring])
    return ring


# Channel order and layout as the vendors' drivers deliver them, in the frames of the ODAS
# configurations (introlab/odas config/odaslive/*.cfg): ReSpeaker USB 4-mic v2.0, 32 mm;
# ReSpeaker 6-mic circular, 46.3 mm; miniDSP UMA-8: centre mic, then a 43 mm ring going
# clockwise from +y (minidsp.cfg); MATRIX Voice: centre mic, then 7 mics on a 38.3 mm ring
# going clockwise from 174.64 deg (matrix_voice.cfg; the 8 mics on a 52.5 mm ring are the
# MATRIX Creator's).
PRESETS: dict[str, np.ndarray] = {
    "respeaker_usb_4mic_v2": circular_array(4, 0.032, start_deg=45.0),
    "respeaker_6mic_circular": circular_array(6, 0.0463, start_deg=0.0),
    "minidsp_uma8": circular_array(6, 0.043, start_deg=90.0, center_mic=True, clockwise=True),
    "matrix_voice": circular_array(7, 0.0383, start_deg=174.64, center_mic=True, clockwise=True),
}


class GeometryError(ValueError):
    """The microphone geometry is unusable."""


@dataclass(frozen=True)
class MicArray:
    """Validated microphone positions, ``(M, 3)`` metres in the array frame."""

    positions: np.ndarray
    name: str = "custom"

    def __post_init__(self):
        p = np.asarray(self.positions, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise GeometryError(f"mic positions must be (M, 3), got shape {p.shape}")
        if p.shape[0] < 2:
            raise GeometryError(f"need at least 2 microphones, got {p.shape[0]}")
        if not np.all(np.isfinite(p)):
            raise GeometryError("mic positions contain NaN or Inf")
        d = np.linalg.norm(p[:, None, :] - p[None, :, :], axis=-1)
        d[np.diag_indices_from(d)] = np.inf
        if d.min() < 1e-4:
            i, j = np.unravel_index(np.argmin(d), d.shape)
            raise GeometryError(f"mics {i} and {j} are at the same position (< 0.1 mm apart)")
        object.__setattr__(self, "positions", p)

    @property
    def n_mics(self) -> int:
        return int(self.positions.shape[0])

    @property
    def aperture_m(self) -> float:
        """Largest inter-microphone distance."""
        p = self.positions
        return float(np.max(np.linalg.norm(p[:, None] - p[None, :], axis=-1)))

    @property
    def is_planar(self) -> bool:
        """True when all mics lie in one plane through z = const (no up/down resolution)."""
        return bool(np.ptp(self.positions[:, 2]) < 1e-6)

    def pairs(self) -> np.ndarray:
        """All microphone pairs ``(P, 2)`` with ``i < j``."""
        i, j = np.triu_indices(self.n_mics, k=1)
        return np.stack([i, j], axis=1)

    @classmethod
    def from_preset(cls, name: str) -> "MicArray":
        if name not in PRESETS:
            raise GeometryError(f"unknown mic_array_preset {name!r}; known: {sorted(PRESETS)}")
        return cls(PRESETS[name].copy(), name=name)

    @classmethod
    def from_flat(cls, flat, name: str = "custom") -> "MicArray":
        """From the ``mic_positions`` parameter: ``[x0, y0, z0, x1, y1, z1, ...]`` metres."""
        v = np.asarray(list(flat), dtype=np.float64)
        if v.size == 0 or v.size % 3:
            raise GeometryError(
                f"mic_positions must be a flat list of x, y, z triples; got {v.size} numbers")
        return cls(v.reshape(-1, 3), name=name)

    @classmethod
    def from_params(cls, params: dict) -> "MicArray":
        """``mic_positions`` (if non-empty) wins over ``mic_array_preset``."""
        flat = [float(x) for x in (params.get("mic_positions") or [])]
        if flat not in ([], [0.0]):  # [0.0] is the "unset" default (ROS lists cannot be empty)
            return cls.from_flat(flat)
        return cls.from_preset(params.get("mic_array_preset", "respeaker_usb_4mic_v2"))
