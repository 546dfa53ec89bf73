"""Figures and overlays for evaluation reports, plus the live overlay image.

* :func:`plot_azimuth_timeline` / :func:`plot_doa_map_snapshots` - matplotlib figures written
  to files through the Agg canvas (object-oriented API: no pyplot state, never ``show()``).
  matplotlib is imported lazily inside them.
* :func:`overlay_frame` - OpenCV only (no matplotlib); the live node publishes its output as
  ``/av_localization/overlay``, so it must stay cheap (a few ms at 640x480).
* :func:`write_overlay_gif` - a small animated GIF of overlay frames (imageio).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from av_localization_ros.core.types import NS_PER_S, TrackState, wrap_angle

# Colours per track ID (BGR, tab10-like), shared by the overlay and the timeline plot.
_PALETTE_BGR = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
)
GT_BOX_COLOR_BGR = (0, 255, 0)


def track_color_bgr(track_id: int) -> tuple[int, int, int]:
    """Deterministic colour of a track ID (BGR uint8 triple)."""
    return _PALETTE_BGR[int(track_id) % len(_PALETTE_BGR)]


def _track_color_rgb01(track_id: int) -> tuple[float, float, float]:
    b, g, r = track_color_bgr(track_id)
    return (r / 255.0, g / 255.0, b / 255.0)


def _new_figure(figsize):
    from matplotlib.figure import Figure  # Agg canvas via savefig; no pyplot

    return Figure(figsize=figsize, layout="constrained")


def _deg(azimuth_rad: float) -> float:
    """Azimuth in degrees wrapped to (-180, 180]."""
    return float(np.rad2deg(wrap_angle(azimuth_rad)))


def _broken(t: np.ndarray, y_deg: np.ndarray, max_gap_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Insert NaNs where the azimuth wraps (|jump| > 180 deg) or the time gap exceeds
    ``max_gap_s``, so that a line plot does not draw across them."""
    t = np.asarray(t, float)
    y = np.asarray(y_deg, float)
    if t.size < 2:
        return t, y
    cut = (np.abs(np.diff(y)) > 180.0) | (np.diff(t) > max_gap_s)
    idx = np.flatnonzero(cut) + 1
    return np.insert(t, idx, np.nan), np.insert(y, idx, np.nan)


# --------------------------------------------------------------------------------------------
# azimuth timeline
# --------------------------------------------------------------------------------------------

def plot_azimuth_timeline(estimates: Sequence, truth: Sequence, path, *,
                          title: str | None = None) -> None:
    """Azimuth (deg) vs. time (s from the first stamp) of peaks, tracks and ground truth.

    ``estimates``: :class:`~av_localization_ros.evaluation.metrics.FrameEstimate` list;
    ``truth``: :class:`~av_localization_ros.evaluation.ground_truth.GroundTruthSample` list.
    DoA peaks are black dots (opacity = confidence); each track ID is a coloured line (thick
    while speaking, thin otherwise) labelled at its start; ground-truth speakers are thick
    translucent lines while active and dashed lines while inactive.
    """
    ests = sorted(estimates, key=lambda e: e.stamp_ns)
    gts = sorted(truth, key=lambda g: g.stamp_ns)
    all_stamps = [e.stamp_ns for e in ests] + [g.stamp_ns for g in gts]
    t0 = min(all_stamps) if all_stamps else 0

    def secs(ns):
        return (int(ns) - t0) / NS_PER_S

    est_t = np.array([secs(e.stamp_ns) for e in ests])
    step = float(np.median(np.diff(est_t))) if est_t.size > 1 else 0.1
    max_gap = max(2.5 * step, 1e-6)

    fig = _new_figure((11, 4.8))
    ax = fig.add_subplot()

    # ground truth, per speaker
    gt_series: dict[int, list[tuple[float, float, bool]]] = {}
    for g in gts:
        for s in g.speakers:
            gt_series.setdefault(s.speaker_id, []).append(
                (secs(g.stamp_ns), _deg(s.azimuth), bool(s.active)))
    gt_step = (float(np.median(np.diff([secs(g.stamp_ns) for g in gts])))
               if len(gts) > 1 else step)
    gt_colors = ("tab:green", "tab:olive", "tab:cyan", "tab:pink", "tab:brown", "tab:gray")
    for k, (sid, rows) in enumerate(sorted(gt_series.items())):
        t, az, act = (np.array(v) for v in zip(*rows))
        act = act.astype(bool)
        color = gt_colors[k % len(gt_colors)]
        ta, ya = _broken(t, np.where(act, az, np.nan), max(2.5 * gt_step, 1e-6))
        ax.plot(ta, ya, color=color, lw=7, alpha=0.35, solid_capstyle="butt",
                label=f"GT spk {sid} (active)")
        ti, yi = _broken(t, np.where(act, np.nan, az), max(2.5 * gt_step, 1e-6))
        if np.isfinite(yi).any():
            ax.plot(ti, yi, color=color, lw=1.2, ls="--", alpha=0.8,
                    label=f"GT spk {sid} (inactive)")

    # DoA peaks
    pt, pa, pc = [], [], []
    for e, t in zip(ests, est_t):
        for p in e.peaks:
            pt.append(t)
            pa.append(_deg(p.azimuth))
            pc.append(float(p.confidence))
    if pt:
        rgba = np.zeros((len(pt), 4))
        rgba[:, 3] = np.clip(np.nan_to_num(np.asarray(pc), nan=0.0), 0.08, 1.0)
        ax.scatter(pt, np.asarray(pa), s=7, c=rgba, lw=0, label="DoA peaks", zorder=3)

    # tracks
    tracks: dict[int, list[tuple[float, float, bool]]] = {}
    for e, t in zip(ests, est_t):
        for tr in e.tracks:
            tracks.setdefault(tr.track_id, []).append(
                (t, _deg(tr.azimuth), bool(tr.speaking)))
    for tid, rows in sorted(tracks.items()):
        t, az, spk = (np.array(v) for v in zip(*rows))
        spk = spk.astype(bool)
        color = _track_color_rgb01(tid)
        tb, yb = _broken(t, az, max_gap)
        ax.plot(tb, yb, color=color, lw=0.9, alpha=0.6, zorder=4)
        ts, ys = _broken(t, np.where(spk, az, np.nan), max_gap)
        ax.plot(ts, ys, color=color, lw=2.2, zorder=5, label=f"track {tid}")
        ax.annotate(f"id {tid}", (t[0], az[0]), xytext=(3, 4), textcoords="offset points",
                    color=color, fontsize=8, zorder=6)

    ax.set_ylim(-180, 180)
    ax.set_yticks(np.arange(-180, 181, 45))
    if all_stamps:
        t_end = secs(max(all_stamps))
        ax.set_xlim(0.0, max(t_end, 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("azimuth (deg)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "DoA peaks, tracks and ground truth")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------
# DoA map snapshots
# --------------------------------------------------------------------------------------------

def _gt_az_el(gt_item) -> tuple[float, float | None]:
    """A GT marker is an azimuth in degrees or an ``(azimuth_deg, elevation_deg)`` pair."""
    arr = np.atleast_1d(np.asarray(gt_item, float))
    return float(arr[0]), (float(arr[1]) if arr.size > 1 else None)


def plot_doa_map_snapshots(maps: Sequence, path, n: int = 6, *, ncols: int = 3) -> None:
    """A grid of up to ``n`` DoA maps, evenly spaced over ``maps``.

    ``maps``: list of ``(stamp_ns, doa_map (n_el, n_az), azimuths_rad, elevations_rad, peaks,
    gt_azimuths_deg)``; ``gt_azimuths_deg`` items are azimuths in degrees or
    ``(azimuth_deg, elevation_deg)`` pairs. One-row (azimuth-only) maps are drawn as polar
    plots (0 deg = array +x at the top, counter-clockwise, i.e. a top view); 2-D maps as images
    over azimuth x elevation. Peaks: red crosses; ground truth: green.
    """
    items = list(maps)
    if not items:
        fig = _new_figure((4, 3))
        fig.add_subplot().text(0.5, 0.5, "no DoA maps", ha="center", va="center")
        fig.savefig(path, dpi=80)
        return
    k = max(1, min(int(n), len(items)))
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    cols = max(1, min(ncols, idx.size))
    rows = int(np.ceil(idx.size / cols))
    fig = _new_figure((4.0 * cols, 3.6 * rows))
    t0 = int(items[0][0])
    for slot, i in enumerate(idx):
        stamp, m, az, el, peaks, gt = items[i]
        m = np.asarray(m, float)
        if m.ndim == 1:
            m = m[None, :]
        az = np.asarray(az, float)
        el = np.atleast_1d(np.asarray(el, float))
        gt = [] if gt is None else list(gt)
        peaks = list(peaks or ())
        title = f"t = {(int(stamp) - t0) / NS_PER_S:.2f} s"
        if m.shape[0] == 1:
            ax = fig.add_subplot(rows, cols, slot + 1, projection="polar")
            ax.set_theta_zero_location("N")
            ax.set_theta_direction(1)
            r = m[0]
            ax.plot(np.append(az, az[0]), np.append(r, r[0]), color="tab:blue", lw=1.2)
            ax.fill(np.append(az, az[0]), np.append(r, r[0]), color="tab:blue", alpha=0.15)
            rmax = float(np.nanmax(r)) if np.isfinite(r).any() and np.nanmax(r) > 0 else 1.0
            for g in gt:
                ga, _ = _gt_az_el(g)
                ax.plot([np.deg2rad(ga)] * 2, [0.0, rmax], color="tab:green", lw=2)
            for p in peaks:
                pr = float(np.interp(wrap_to_grid(p.azimuth, az), az, r)) if az.size else rmax
                ax.plot([p.azimuth], [pr], "x", color="red", ms=8, mew=2)
            ax.set_ylim(0, rmax * 1.05)
            ax.set_yticklabels([])
        else:
            ax = fig.add_subplot(rows, cols, slot + 1)
            azd, eld = np.rad2deg(az), np.rad2deg(el)
            daz = (azd[-1] - azd[0]) / max(azd.size - 1, 1) / 2.0
            delv = (eld[-1] - eld[0]) / max(eld.size - 1, 1) / 2.0
            ax.imshow(m, origin="lower", aspect="auto", cmap="viridis",
                      extent=(azd[0] - daz, azd[-1] + daz, eld[0] - delv, eld[-1] + delv))
            for g in gt:
                ga, ge = _gt_az_el(g)
                if ge is None:
                    ax.axvline(ga, color="lime", ls="--", lw=1.5)
                else:
                    ax.plot([ga], [ge], "o", mfc="none", mec="lime", ms=12, mew=2)
            if peaks:
                ax.plot([np.rad2deg(p.azimuth) for p in peaks],
                        [np.rad2deg(p.elevation) for p in peaks], "x", color="red", ms=8, mew=2)
            ax.set_xlabel("azimuth (deg)")
            ax.set_ylabel("elevation (deg)")
        ax.set_title(title, fontsize=9, pad=14 if m.shape[0] == 1 else 6)
    fig.savefig(path, dpi=80)


def wrap_to_grid(angle: float, grid: np.ndarray) -> float:
    """Shift ``angle`` by multiples of 2 pi into ``[grid[0], grid[0] + 2 pi)``."""
    if grid.size == 0:
        return float(angle)
    return float(grid[0] + (angle - grid[0]) % (2.0 * np.pi))


# --------------------------------------------------------------------------------------------
# image overlay (live node) and GIF
# --------------------------------------------------------------------------------------------

def _as_bgr_u8(image) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and np.nanmax(img) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img.copy()


def _label(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color) -> None:
    """Text with a dark outline so that it stays readable on any background."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def overlay_frame(image_bgr: np.ndarray, heatmap: np.ndarray | None = None,
                  tracks: Sequence[TrackState] = (), camera=None, gt_boxes=None, *,
                  alpha: float = 0.6) -> np.ndarray:
    """Draw the heatmap, projected tracks and ground-truth boxes on a copy of the image.

    * ``heatmap`` ``(h, w)`` float in [0, 1] (resized to the image if needed): JET colours
      blended with a per-pixel weight ``alpha * heatmap``, so cold regions stay untouched.
    * ``tracks`` are projected with ``camera`` (:class:`core.camera.CameraGeometry`; the 3-D
      position when known, else the direction) and drawn, when in view, as a circle (thick
      while speaking) and an ``id N`` label in the track's colour. Needs ``camera``.
    * ``gt_boxes``: iterable of ``[u_min, v_min, u_max, v_max]`` (or None), or of
      ``SpeakerTruth`` (their ``box`` is used, labelled ``gt N``); drawn in green.

    Camera pixel coordinates are rescaled when the image size differs from the camera's.
    Returns a new BGR uint8 image of the input's size.
    """
    out = _as_bgr_u8(image_bgr)
    h_img, w_img = out.shape[:2]

    if heatmap is not None:
        hm = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0,
                           neginf=0.0)
        if hm.ndim == 3:
            hm = hm[..., 0]
        if hm.shape != (h_img, w_img):
            hm = cv2.resize(hm, (w_img, h_img), interpolation=cv2.INTER_LINEAR)
        np.clip(hm, 0.0, 1.0, out=hm)
        colored = cv2.applyColorMap((hm * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)
        w = (float(alpha) * hm).astype(np.float32)
        out = cv2.blendLinear(out, colored, 1.0 - w, w)

    sx = sy = 1.0
    if camera is not None:
        sx, sy = w_img / float(camera.width), h_img / float(camera.height)
    scale = max(w_img, h_img) / 640.0
    font_scale = 0.5 * max(scale, 0.6)
    radius = max(6, int(round(14 * scale)))

    if camera is not None and tracks:
        for tr in tracks:
            if tr.position is not None:
                uv, z = camera.project_points(np.asarray(tr.position, float))
            else:
                uv, z = camera.project_directions(tr.direction)
            if not bool(camera.in_view(uv, z)):
                continue
            u, v = int(round(uv[0] * sx)), int(round(uv[1] * sy))
            color = track_color_bgr(tr.track_id)
            cv2.circle(out, (u, v), radius, color, 3 if tr.speaking else 1, cv2.LINE_AA)
            _label(out, f"id {tr.track_id}", (u - radius, v - radius - 4), font_scale, color)

    if gt_boxes is not None:
        for item in gt_boxes:
            label = None
            box = item
            if hasattr(item, "box"):
                box = item.box
                label = f"gt {item.speaker_id}"
            if box is None:
                continue
            u0, v0, u1, v1 = (float(b) for b in box)
            p0 = (int(round(u0 * sx)), int(round(v0 * sy)))
            p1 = (int(round(u1 * sx)), int(round(v1 * sy)))
            cv2.rectangle(out, p0, p1, GT_BOX_COLOR_BGR, 2)
            if label:
                _label(out, label, (p0[0], max(p0[1] - 4, 10)), font_scale, GT_BOX_COLOR_BGR)
    return out


def write_overlay_gif(frames: Sequence[np.ndarray], path, fps: float = 10.0, *,
                      max_width: int = 320) -> None:
    """Write BGR frames as a looping GIF, downscaled to at most ``max_width`` pixels wide.

    All frames are resized to the (downscaled) size of the first one.
    """
    import imageio.v3 as iio

    frames = list(frames)
    if not frames:
        raise ValueError("write_overlay_gif needs at least one frame")
    first = _as_bgr_u8(frames[0])
    h, w = first.shape[:2]
    s = min(1.0, max_width / float(w))
    size = (max(1, int(round(w * s))), max(1, int(round(h * s))))
    rgb = []
    for f in frames:
        f = _as_bgr_u8(f)
        if (f.shape[1], f.shape[0]) != size:
            f = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
        rgb.append(cv2.cvtColor(f, cv2.COLOR_BGR2RGB))
    duration_ms = 1000.0 / max(float(fps), 1e-3)
    iio.imwrite(path, np.stack(rgb), extension=".gif", duration=duration_ms, loop=0)
