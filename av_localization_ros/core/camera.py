"""Pinhole camera geometry and the rigid array-to-camera transform.

Frames: the array frame follows REP-103 (x forward, y left, z up); the camera's optical frame
follows the ROS optical convention (z forward, x right, y down). ``CameraGeometry`` holds the
intrinsics ``K`` (CameraInfo.k) and the pose of the optical frame in the array frame, i.e. the
``/tf_static`` transform with parent = array frame, child = optical frame:

    p_array = R_array_optical @ p_optical + t_array_optical
    p_optical = R_array_optical.T @ (p_array - t_array_optical)

A pixel ``(u, v)`` (origin at the top-left pixel's corner-free centre convention of CameraInfo)
back-projects to the optical ray ``K^-1 [u, v, 1]^T``.
Lens distortion is ignored here (plumb_bob images are expected rectified for fusion).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Rotation taking optical-frame coordinates to a REP-103 body frame with the same origin:
# optical z (forward) -> body x, optical x (right) -> body -y, optical y (down) -> body -z.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0],
                           [-1.0, 0.0, 0.0],
                           [0.0, -1.0, 0.0]])


class CalibrationError(ValueError):
    """Camera intrinsics or extrinsics are missing or unusable."""


def quaternion_to_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix of a (normalised) Hamilton quaternion, as in geometry_msgs/Quaternion."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise CalibrationError("degenerate quaternion")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quaternion(r: np.ndarray) -> np.ndarray:
    """``[x, y, z, w]`` of a rotation matrix (Shepperd's method)."""
    r = np.asarray(r, dtype=np.float64)
    t = np.trace(r)
    if t > 0:
        s = 2.0 * np.sqrt(t + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    return q / np.linalg.norm(q)


@dataclass(frozen=True)
class CameraGeometry:
    """Intrinsics plus the optical frame's pose in the array frame."""

    k: np.ndarray  # (3, 3)
    width: int
    height: int
    r_array_optical: np.ndarray = field(default_factory=lambda: R_BODY_OPTICAL.copy())  # (3, 3)
    t_array_optical: np.ndarray = field(default_factory=lambda: np.zeros(3))  # (3,) metres

    def __post_init__(self):
        k = np.asarray(self.k, dtype=np.float64).reshape(3, 3)
        if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
            raise CalibrationError("camera intrinsics K must have positive focal lengths")
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"bad image size {self.width}x{self.height}")
        r = np.asarray(self.r_array_optical, dtype=np.float64).reshape(3, 3)
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6):
            raise CalibrationError("extrinsic rotation is not orthonormal")
        t = np.asarray(self.t_array_optical, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(t)):
            raise CalibrationError(f"extrinsic translation is not finite: {t.tolist()}")
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "r_array_optical", r)
        object.__setattr__(self, "t_array_optical", t)

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float, **extrinsics) -> "CameraGeometry":
        f = 0.5 * width / np.tan(0.5 * np.deg2rad(hfov_deg))
        k = np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]])
        return cls(k=k, width=width, height=height, **extrinsics)

    def to_optical(self, points_array: np.ndarray) -> np.ndarray:
        """Array-frame points ``(..., 3)`` into the optical frame."""
        return (np.asarray(points_array) - self.t_array_optical) @ self.r_array_optical

    def project_points(self, points_array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(..., 2)`` and depth ``(...,)`` of array-frame points (depth <= 0: behind)."""
        pc = self.to_optical(points_array)
        z = pc[..., 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        uvw = pc @ self.k.T
        uv = uvw[..., :2] / safe[..., None]
        return uv, z

    def project_directions(self, directions_array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of directions at infinity (array frame): the vanishing points, and depth sign."""
        d = np.asarray(directions_array) @ self.r_array_optical
        z = d[..., 2]
        safe = np.where(np.abs(z) < 1e-9, 1e-9, z)
        uv = (d @ self.k.T)[..., :2] / safe[..., None]
        return uv, z

    def pixel_rays_array(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit ray directions ``(..., 3)`` in the array frame through pixels ``(u, v)``."""
        uv1 = np.stack([np.asarray(u, float), np.asarray(v, float), np.ones(np.shape(u))], -1)
        rays = uv1 @ np.linalg.inv(self.k).T
        rays = rays @ self.r_array_optical.T
        return rays / np.linalg.norm(rays, axis=-1, keepdims=True)

    def pixel_directions_from_array(self, u, v, range_m: float = 2.0) -> np.ndarray:
        """Directions seen *from the array origin* of points on pixel rays at ``range_m``.

        The camera sits a few centimetres from the array, so the parallax matters only at
        short range; it is modelled by placing the point at ``range_m`` along the ray.
        """
        pts = self.t_array_optical + range_m * self.pixel_rays_array(u, v)
        return pts / np.linalg.norm(pts, axis=-1, keepdims=True)

    def in_view(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        return ((depth > 0) & (uv[..., 0] >= 0) & (uv[..., 0] <= self.width - 1)
                & (uv[..., 1] >= 0) & (uv[..., 1] <= self.height - 1))
