"""Camera/array fusion: the DoA likelihood projected into the image.

For every pixel ``(u, v)`` the ray ``r = R K^-1 [u, v, 1]^T`` (array frame) is followed to the
assumed talker range ``rho`` from the camera centre ``t``; the direction of that point seen from
the array origin, ``d = (t + rho r) / |t + rho r|``, indexes the DoA map (nearest grid cell).
The per-pixel lookup table depends only on the camera, the grid and ``rho``, so it is built once
and each frame costs one gather. The fused map is the normalised product

    fused(u, v) = H(u, v) * L(u, v) / max(H * L)

of the audio-visual heatmap ``H`` and the projected DoA likelihood ``L``; where the DoA
is silent (all-zero) the heatmap passes through unchanged.
"""
from __future__ import annotations

import numpy as np

from .camera import CameraGeometry

WORKING_MAX_SIDE = 160  # px: heatmaps are this coarse anyway; keeps the published topic small


def working_scale(width: int, height: int, max_side: int = WORKING_MAX_SIDE) -> float:
    """Working pixels per image pixel: the longest side at most ``max_side``, never enlarged."""
    return min(1.0, max_side / max(width, height))


def working_shape(width: int, height: int, max_side: int = WORKING_MAX_SIDE) -> tuple[int, int]:
    """``(h, w)`` of the working resolution of a ``width x height`` image: the same field of
    view and aspect ratio, longest side at most ``max_side``."""
    scale = working_scale(width, height, max_side)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


class DoaImageProjector:
    """Projects DoA maps into a camera image at its working resolution (:func:`working_shape`)."""

    def __init__(self, camera: CameraGeometry, azimuths: np.ndarray, elevations: np.ndarray,
                 range_m: float = 2.0, max_side: int = WORKING_MAX_SIDE):
        self.camera = camera
        scale = working_scale(camera.width, camera.height, max_side)
        self.shape = working_shape(camera.width, camera.height, max_side)
        h, w = self.shape
        # pixel centres of the working grid, in full-resolution pixel coordinates
        u = (np.arange(w) + 0.5) / scale - 0.5
        v = (np.arange(h) + 0.5) / scale - 0.5
        uu, vv = np.meshgrid(u, v)
        d = camera.pixel_directions_from_array(uu, vv, range_m=range_m)
        az = np.arctan2(d[..., 1], d[..., 0])
        el = np.arctan2(d[..., 2], np.hypot(d[..., 0], d[..., 1]))
        az_step = 2 * np.pi / len(azimuths) if len(azimuths) > 1 else 1.0
        self._az_idx = np.mod(np.round((az - azimuths[0]) / az_step), len(azimuths)).astype(np.intp)
        if len(elevations) > 1:
            self._el_idx = np.abs(el[..., None] - elevations).argmin(axis=-1).astype(np.intp)
        else:
            self._el_idx = np.zeros_like(self._az_idx)

    def likelihood(self, doa_map: np.ndarray) -> np.ndarray:
        """``(h, w)`` DoA likelihood at the working resolution."""
        return doa_map[self._el_idx, self._az_idx].astype(np.float32)


def fuse(heatmap: np.ndarray | None, likelihood: np.ndarray) -> np.ndarray:
    """Normalised product of heatmap and likelihood (same shape), values in [0, 1]."""
    if heatmap is None:
        out = likelihood
    else:
        out = heatmap * likelihood if likelihood.max() > 0 else heatmap
    peak = float(out.max())
    return (out / peak).astype(np.float32) if peak > 0 else np.zeros_like(out, np.float32)
