"""Synthetic camera frames: a textured room background and one person-like figure per talker.

Figure model (array frame, metres), around the talker position ``p`` = head centre = the sound
source: a head ellipse ``HEAD_HALF_WIDTH`` x ``HEAD_HALF_HEIGHT`` (0.2 m tall) with hair and
eyes, shoulders (an ellipse centred ``SHOULDER_DROP`` below the head centre) and a body down
to the floor. Sizes in pixels follow the perspective projection of these extents
(``CameraGeometry.project_points``), laid out in the plane facing the camera. An active talker
shows an open mouth whose size follows its dry signal's short-time level; a silent one a closed
mouth line.

Ground-truth box: the bounding box of the projected head + shoulders ellipses, clipped to the
image; ``None`` when the head centre is behind the camera or projects outside the image.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..core.camera import CameraGeometry

HEAD_HALF_WIDTH = 0.075
HEAD_HALF_HEIGHT = 0.10
SHOULDER_DROP = 0.28
SHOULDER_HALF_WIDTH = 0.23
SHOULDER_HALF_HEIGHT = 0.10
TORSO_HALF_WIDTH = 0.20
MIN_DEPTH_M = 0.05

# BGR shirt colours and skin tones, one per talker index (cycled).
SHIRT_COLOURS = [(40, 40, 200), (200, 90, 30), (40, 160, 40), (160, 40, 160), (20, 150, 210)]
SKIN_COLOURS = [(140, 170, 220), (90, 120, 170), (120, 150, 200), (70, 95, 140), (150, 185, 230)]
HAIR_COLOURS = [(30, 30, 40), (40, 70, 110), (20, 20, 20), (90, 110, 140), (50, 50, 60)]
_SHIFT = 4  # sub-pixel drawing
_SCALE = 1 << _SHIFT


def mouth_openness(dry: np.ndarray, index: int, sample_rate: int, ref_rms: float) -> float:
    """Mouth opening in [0.15, 1] from the dry signal's RMS in a 40 ms window at ``index``."""
    h = int(0.02 * sample_rate)
    seg = dry[max(0, index - h):index + h]
    if seg.size == 0 or ref_rms <= 0:
        return 0.15
    rms = float(np.sqrt(np.mean(seg ** 2)))
    return float(np.clip(np.sqrt(rms / ref_rms), 0.15, 1.0))


class SceneRenderer:
    """Draws frames for one scene; the background is fixed per scene (from the seed)."""

    def __init__(self, camera: CameraGeometry, n_talkers: int, seed=0,
                 room_dim=(6.0, 5.0, 3.0), array_position=(1.5, 2.5, 1.2)):
        self.camera = camera
        self.n_talkers = n_talkers
        self.floor_z = -float(np.asarray(array_position, float)[2])  # floor in the array frame
        rng = np.random.default_rng(seed)
        self.background = self._make_background(rng, np.asarray(room_dim, float),
                                                np.asarray(array_position, float))
        h, w = camera.height, camera.width
        noise = rng.normal(0.0, 2.0, size=(4, h, w, 3))
        self._noise_pos = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-noise, 0, 255).astype(np.uint8)

    # ---------------------------------------------------------------- background
    def _make_background(self, rng, room_dim, array_pos) -> np.ndarray:
        cam = self.camera
        h, w = cam.height, cam.width
        top = rng.uniform(120, 230, 3)
        bottom = top * rng.uniform(0.6, 0.9)
        a = np.linspace(0.0, 1.0, h)[:, None, None]
        img = (1 - a) * top[None, None, :] + a * bottom[None, None, :]
        img = np.repeat(img, w, axis=1)
        # Floor: below the image line of the far wall's bottom edge (camera looking along +x).
        wall_x = max(room_dim[0] - array_pos[0], 1.0)
        uv, z = cam.project_points(np.array([wall_x, 0.0, -array_pos[2]]))
        v_floor = int(np.clip(uv[1], 0, h)) if z > 0 else h
        floor = rng.uniform(50, 140, 3)
        img[v_floor:] = floor[None, None, :] * np.linspace(0.85, 1.1, h - v_floor)[:, None, None]
        # Wall decorations: pictures, a door, a window.
        for _ in range(int(rng.integers(3, 7))):
            ww, hh = rng.uniform(0.05, 0.22) * w, rng.uniform(0.06, 0.3) * h
            x0, y0 = rng.uniform(0, w - ww), rng.uniform(0, max(1.0, v_floor - hh))
            col = rng.uniform(30, 240, 3)
            img[int(y0):int(y0 + hh), int(x0):int(x0 + ww)] = col
        texture = cv2.GaussianBlur(rng.normal(0.0, 6.0, (h, w, 1)), (0, 0), 1.5)[..., None]
        img = img + texture
        return np.clip(img, 0, 255).astype(np.uint8)

    # ---------------------------------------------------------------- geometry
    def _lateral(self, p: np.ndarray) -> np.ndarray:
        """Horizontal unit vector perpendicular to the viewing ray to ``p`` (pointing left)."""
        r = p - self.camera.t_array_optical
        lat = np.array([-r[1], r[0], 0.0])
        n = np.linalg.norm(lat)
        return lat / n if n > 1e-9 else np.array([0.0, 1.0, 0.0])

    def _ellipse(self, centre: np.ndarray, lat: np.ndarray, half_w: float, half_h: float):
        """Projected ellipse: centre (u, v), half axes (a, b) pixels, depth of the centre."""
        up = np.array([0.0, 0.0, 1.0])
        pts = np.stack([centre, centre + half_w * lat, centre - half_w * lat,
                        centre + half_h * up, centre - half_h * up])
        uv, z = self.camera.project_points(pts)
        a = 0.5 * np.linalg.norm(uv[1] - uv[2])
        b = 0.5 * np.linalg.norm(uv[3] - uv[4])
        return uv[0], a, b, float(z[0])

    def figure_extent(self, p: np.ndarray):
        """``(head, shoulders)`` projected ellipses of a talker at ``p``, or None if behind."""
        p = np.asarray(p, dtype=np.float64)
        lat = self._lateral(p)
        head = self._ellipse(p, lat, HEAD_HALF_WIDTH, HEAD_HALF_HEIGHT)
        sh = self._ellipse(p - np.array([0, 0, SHOULDER_DROP]), lat, SHOULDER_HALF_WIDTH,
                           SHOULDER_HALF_HEIGHT)
        if head[3] < MIN_DEPTH_M or sh[3] < MIN_DEPTH_M:
            return None
        return head, sh

    def box(self, p) -> tuple[float, float, float, float] | None:
        """Ground-truth ``(u_min, v_min, u_max, v_max)`` of the head + shoulders, or None."""
        p = np.asarray(p, dtype=np.float64)
        uv, z = self.camera.project_points(p)
        if not bool(self.camera.in_view(uv, z)):
            return None
        ext = self.figure_extent(p)
        if ext is None:
            return None
        (ch, ah, bh, _), (cs, as_, bs, _) = ext
        u0 = min(ch[0] - ah, cs[0] - as_)
        u1 = max(ch[0] + ah, cs[0] + as_)
        v0 = min(ch[1] - bh, cs[1] - bs)
        v1 = max(ch[1] + bh, cs[1] + bs)
        w, h = self.camera.width - 1, self.camera.height - 1
        return (float(np.clip(u0, 0, w)), float(np.clip(v0, 0, h)),
                float(np.clip(u1, 0, w)), float(np.clip(v1, 0, h)))

    # ---------------------------------------------------------------- drawing
    @staticmethod
    def _fp(pt) -> tuple[int, int]:
        return (int(round(pt[0] * _SCALE)), int(round(pt[1] * _SCALE)))

    @staticmethod
    def _axes(a, b) -> tuple[int, int]:
        lim = 1 << 20
        return (int(min(round(a * _SCALE), lim)), int(min(round(b * _SCALE), lim)))

    def _draw_figure(self, img, p, index: int, mouth: float) -> None:
        ext = self.figure_extent(p)
        if ext is None:
            return
        (ch, ah, bh, _), (cs, as_, bs, _) = ext
        if max(ah, as_) > 5 * self.camera.width:
            return
        lat = self._lateral(p)
        k = index % len(SHIRT_COLOURS)
        shirt, skin, hair = SHIRT_COLOURS[k], SKIN_COLOURS[k], HAIR_COLOURS[k]
        aa = cv2.LINE_AA
        # Torso: trapezoid from the shoulders down.
        up = np.array([0.0, 0.0, 1.0])
        s_c = p - SHOULDER_DROP * up
        length = max(s_c[2] - self.floor_z, 0.3)  # down to the floor
        quad = np.stack([s_c + TORSO_HALF_WIDTH * lat, s_c - TORSO_HALF_WIDTH * lat,
                         s_c - length * up - 1.1 * TORSO_HALF_WIDTH * lat,
                         s_c - length * up + 1.1 * TORSO_HALF_WIDTH * lat])
        uvq, zq = self.camera.project_points(quad)
        if np.all(zq > MIN_DEPTH_M):
            pts = np.array([self._fp(q) for q in uvq], dtype=np.int32)
            cv2.fillConvexPoly(img, pts, shirt, aa, _SHIFT)
        cv2.ellipse(img, self._fp(cs), self._axes(as_, bs), 0, 0, 360, shirt, -1, aa, _SHIFT)
        # Neck.
        cv2.ellipse(img, self._fp(0.5 * (ch + cs)), self._axes(0.45 * ah, 0.5 * bh), 0, 0, 360,
                    tuple(int(0.85 * c) for c in skin), -1, aa, _SHIFT)
        # Hair (the whole head ellipse), then the face inside it.
        cv2.ellipse(img, self._fp(ch), self._axes(ah, bh), 0, 0, 360, hair, -1, aa, _SHIFT)
        cv2.ellipse(img, self._fp(ch + np.array([0, 0.1 * bh])), self._axes(0.92 * ah, 0.9 * bh),
                    0, 0, 360, skin, -1, aa, _SHIFT)
        # Eyes.
        r_eye = max(0.12 * ah, 0.6)
        for s in (-1, 1):
            e = ch + np.array([s * 0.38 * ah, -0.05 * bh])
            cv2.ellipse(img, self._fp(e), self._axes(r_eye, r_eye), 0, 0, 360, (25, 25, 25),
                        -1, aa, _SHIFT)
        # Mouth: open (dark ellipse scaled by `mouth`) when talking, a closed line otherwise.
        m_c = ch + np.array([0, 0.5 * bh])
        m_w = 0.38 * ah
        if mouth > 0:
            cv2.ellipse(img, self._fp(m_c), self._axes(m_w, max(0.25 * bh * mouth, 0.5)), 0, 0,
                        360, (30, 20, 90), -1, aa, _SHIFT)
        else:
            cv2.line(img, self._fp(m_c - np.array([m_w, 0])), self._fp(m_c + np.array([m_w, 0])),
                     (60, 60, 110), max(1, int(round(0.04 * bh))), aa, _SHIFT)

    def render(self, positions, mouths, frame_index: int = 0) -> np.ndarray:
        """BGR uint8 frame with talkers at array-frame ``positions`` (far ones drawn first);
        ``mouths[i]`` = mouth opening in [0, 1], 0 = not talking."""
        img = self.background.copy()
        depth = [float(self.camera.to_optical(np.asarray(p, float))[2]) for p in positions]
        for i in np.argsort(depth)[::-1]:
            self._draw_figure(img, np.asarray(positions[i], float), int(i), float(mouths[i]))
        k = frame_index % len(self._noise_pos)
        cv2.add(img, self._noise_pos[k], dst=img)
        cv2.subtract(img, self._noise_neg[k], dst=img)
        return img
