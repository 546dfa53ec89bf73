"""Sound-source localisation metrics, following the EZ-VSL / SLAVC evaluation protocol.

Protocol (re-implemented from the description of EZ-VSL's ``test.py`` / ``utils.Evaluator`` and
SLAVC's ``utils.EvaluatorFull``; no code copied):

* Maps live on a 224x224 grid (``EVAL_SIZE``); predictions are upsampled there (bilinear,
  ``align_corners=True`` in EZ-VSL).
* ``normalize_map``: min-max normalise (left unchanged if the map is constant).
* ``median_threshold``: the value at sorted index ``int(0.5 * n)`` of the flattened map;
  the binary prediction is ``map >= thr``.
* ``ciou(infer, gt) = sum(infer * gt) / (sum(gt) + sum(infer * (gt == 0)))`` with a possibly
  soft ``gt`` (Flickr consensus).
* headline "cIoU" = AP50 = share of samples with cIoU >= 0.5; ``auc`` = trapezoid area under
  (threshold t, share of samples with cIoU >= t) for t = 0, 0.05, ..., 1.
* GT maps: VGG-SS = union of the boxes (1 inside any box); Flickr = per-annotator box masks
  summed, divided by 2 and clipped to 1 (consensus of >= 2 annotators counts fully, one
  annotator counts 0.5). Boxes are given in 224-grid pixels as ints, slices ``[y0:y1, x0:x1]``.
* SLAVC extended metrics over all pairs, including silent / off-screen ones (no box):
  a pair is a true positive when confidence >= c and it has boxes and cIoU >= 0.5; a false
  positive when confidence >= c and (no boxes or cIoU < 0.5); a false negative when it has boxes
  and confidence < c. AP is the area under the interpolated precision-recall curve swept over the
  confidence values; max-F1 is the best F1 over the sweep.
"""
from __future__ import annotations

import numpy as np

EVAL_SIZE = 224


def normalize_map(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi - lo != 0 else m


def median_threshold(m: np.ndarray) -> float:
    flat = np.sort(np.asarray(m).ravel())
    return float(flat[int(flat.size * 0.5)])


def ciou(pred: np.ndarray, gt: np.ndarray, thr: float) -> float:
    infer = (np.asarray(pred) >= thr).astype(np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    den = gt.sum() + (infer * (gt == 0)).sum()
    return float((infer * gt).sum() / den) if den > 0 else 0.0


def boxes_to_pixels(boxes_norm, size: int = EVAL_SIZE) -> list[tuple[int, int, int, int]]:
    """Normalised [x0, y0, x1, y1] -> int pixel boxes on the ``size`` grid (truncation, as ints)."""
    out = []
    for b in np.asarray(boxes_norm, dtype=np.float64).reshape(-1, 4):
        b = np.clip(b, 0.0, 1.0) * size
        out.append(tuple(int(v) for v in b))
    return out


def gt_map(boxes_px, fmt: str = "vggss", size: int = EVAL_SIZE) -> np.ndarray:
    """GT map from pixel boxes: ``fmt='vggss'`` union; ``fmt='flickr'`` annotator consensus."""
    g = np.zeros((size, size))
    for x0, y0, x1, y1 in boxes_px:
        t = np.zeros((size, size))
        t[int(y0):int(y1), int(x0):int(x1)] = 1.0
        g += t
    if fmt == "flickr":
        g = g / 2.0
        g[g > 1] = 1.0
    elif fmt == "vggss":
        g[g > 0] = 1.0
    else:
        raise ValueError(f"unknown gt format {fmt}")
    return g


def flickr_gt_map(boxes_px, size: int = EVAL_SIZE) -> np.ndarray:
    return gt_map(boxes_px, "flickr", size)


def upsample_map(m: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """Bilinear, align_corners=True (EZ-VSL's F.interpolate call), numpy only."""
    m = np.asarray(m, dtype=np.float64)
    h, w = m.shape

    def axis(n_in):
        if n_in == 1:
            return np.zeros(size, int), np.zeros(size, int), np.zeros(size)
        pos = np.linspace(0, n_in - 1, size)
        i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
        return i0, i0 + 1, pos - i0

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    # a + (b - a) f form: exact on constant regions (matters for the median threshold)
    top = m[y0][:, x0] + (m[y0][:, x1] - m[y0][:, x0]) * fx
    bot = m[y1][:, x0] + (m[y1][:, x1] - m[y1][:, x0]) * fx
    return top + (bot - top) * fy[:, None]


def auc_from_cious(cious) -> float:
    c = np.asarray(cious, dtype=np.float64)
    thr = np.array([0.05 * i for i in range(21)])
    frac = np.array([np.sum(c >= t) / c.size for t in thr])
    return float(np.trapezoid(frac, thr))


def ap50(cious) -> float:
    return float(np.mean(np.asarray(cious) >= 0.5))


def localisation_ciou(pred_map: np.ndarray, gt: np.ndarray) -> float:
    """EZ-VSL per-sample cIoU: upsample if needed, min-max normalise, median threshold."""
    p = pred_map if pred_map.shape == gt.shape else upsample_map(pred_map, gt.shape[0])
    p = normalize_map(p)
    return ciou(p, gt, median_threshold(p))


def precision_recall(has_box, cious, conf, conf_thr, ciou_thr=0.5) -> tuple[float, float]:
    tp = fp = fn = 0
    for b, c, s in zip(has_box, cious, conf):
        if s >= conf_thr:
            if b and c >= ciou_thr:
                tp += 1
            else:
                fp += 1
        elif b:
            fn += 1
    p = 1.0 if tp + fp == 0 else tp / (tp + fp)
    r = 1.0 if tp + fn == 0 else tp / (tp + fn)
    return p, r


def _sweep(conf):
    """Confidence thresholds as SLAVC sweeps them: sorted values without the largest, from the
    top down, subsampled to about 200 points."""
    c = np.sort(np.asarray(conf, dtype=np.float64))
    step = max(1, c.size // 200)
    return c[:-1][::-step]


def silent_ap(has_box, cious, conf, ciou_thr=0.5) -> float:
    """SLAVC AP over all pairs (silent / off-screen pairs: ``has_box=False``)."""
    prec, rec = [], []
    for t in _sweep(conf):
        p, r = precision_recall(has_box, cious, conf, t, ciou_thr)
        prec.append(p)
        rec.append(r)
    if len(prec) < 2:
        return float("nan")
    pmax = [max(prec[i:]) for i in range(len(prec))]
    return float(sum(pmax[i] * (rec[i + 1] - rec[i]) for i in range(len(prec) - 1)))


def max_f1(has_box, cious, conf, ciou_thr=0.5) -> float:
    """Best F1 over the confidence sweep (SLAVC reports F1 at 10 quantiles; we keep the max
    over every distinct confidence)."""
    best = 0.0
    for t in np.unique(np.asarray(conf, dtype=np.float64)):
        p, r = precision_recall(has_box, cious, conf, t, ciou_thr)
        if p + r > 0:
            best = max(best, 2 * p * r / (p + r))
    return best


def slavc_confidence(cos_map: np.ndarray) -> float:
    """SLAVC's score: mean of the top 25% of the map's (cos + 1) / 2 values."""
    s = (np.asarray(cos_map, dtype=np.float64).ravel() + 1.0) / 2.0
    n = s.size
    return float(np.sort(s)[-max(n // 4, 1):].mean())


def pointing_hit(pred_map: np.ndarray, gt: np.ndarray) -> bool:
    """Pointing game (not part of EZ-VSL's protocol; useful for small boxes, where the median
    threshold caps cIoU at 2 x box area): is the map's maximum inside the GT?"""
    p = pred_map if pred_map.shape == gt.shape else upsample_map(pred_map, gt.shape[0])
    y, x = np.unravel_index(int(np.argmax(p)), p.shape)
    return bool(gt[y, x] > 0)


def display_map(m: np.ndarray, size: int = EVAL_SIZE) -> np.ndarray:
    """The map resized the way ``runtime.HeatmapRunner`` displays it (cv2 bilinear, half-pixel
    centres: feature cell i covers [i, i + 1) / n of the image). ``upsample_map`` follows EZ-VSL
    (align_corners: cell i sits at i / (n - 1)), which moves edge cells half a cell outwards:
    for the small simulator talkers near the image border that decides the pointing game."""
    import cv2
    m = np.asarray(m, np.float32)
    return m if m.shape == (size, size) else cv2.resize(m, (size, size),
                                                        interpolation=cv2.INTER_LINEAR)


def centre_prior_map(size: int = EVAL_SIZE, sigma: float = 0.25) -> np.ndarray:
    """Baseline: an isotropic Gaussian at the image centre (sigma in image widths)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    return np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))


class Evaluator:
    """Accumulates per-sample cIoU + confidence; ``summary()`` gives all headline numbers."""

    def __init__(self):
        self.cious: list[float] = []
        self.conf: list[float] = []
        self.has_box: list[bool] = []
        self.hits: list[bool] = []
        self.hits_display: list[bool] = []

    def add(self, pred_map, boxes_norm, confidence: float = 0.0, fmt: str = "vggss"):
        boxes_px = boxes_to_pixels(boxes_norm)
        has = len(boxes_px) > 0
        c = 0.0
        if has:
            g = gt_map(boxes_px, fmt)
            c = localisation_ciou(np.asarray(pred_map), g)
            self.hits.append(pointing_hit(np.asarray(pred_map), g))
            self.hits_display.append(pointing_hit(display_map(pred_map, g.shape[0]), g))
        self.cious.append(c)
        self.conf.append(float(confidence))
        self.has_box.append(has)
        return c

    def summary(self) -> dict:
        vis = [c for c, b in zip(self.cious, self.has_box) if b]
        out = {"n": len(self.cious), "n_visible": len(vis)}
        if vis:
            out.update(ciou_ap50=ap50(vis), auc=auc_from_cious(vis), mean_ciou=float(np.mean(vis)),
                       pointing_acc=float(np.mean(self.hits)),
                       pointing_acc_display=float(np.mean(self.hits_display)))
        if len(vis) < len(self.cious):
            out.update(silent_ap50=silent_ap(self.has_box, self.cious, self.conf),
                       silent_max_f1=max_f1(self.has_box, self.cious, self.conf))
        return out
