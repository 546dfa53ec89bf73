"""Data for the audio-visual heatmap network.

1. ``SyntheticAV``: a procedural audio-visual dataset with ground-truth boxes.
   Five sound-source categories, each with its own look and its own family of sounds:

   ====  ========  ==========================================  =====================================
   id    name      look                                        sound
   ====  ========  ==========================================  =====================================
   0     bell      yellow/orange disc with concentric rings    inharmonic partials (1, 2.76, 5.40) x
                                                               f0 in [700, 1100] Hz, re-struck,
                                                               exponential decay
   1     drum      red rectangle with horizontal stripes       click/thump train, 4-10 Hz, noise
                                                               burst + 60-140 Hz body
   2     siren     blue triangle                               sinusoidal FM chirp 500-2600 Hz
   3     engine    green rectangle with a checker texture      low noise band (centre 120-400 Hz)
                                                               with 20-40 Hz firing modulation
   4     talker    magenta body + head (person-like)           speech-like: harmonic f0 100-240 Hz,
                                                               formants, 3-6 Hz syllable AM
   ====  ========  ==========================================  =====================================

   Each frame shows 1-3 sounding objects (distinct categories) and, sometimes, one *silent
   distractor* (a visible object of another category whose sound is absent). Evaluation sets add
   *silent* pairs (audio = low noise only) and *off-screen* pairs (the sound of a category that is
   not visible); both carry no boxes (SLAVC's "non-visible / non-audible" pairs).

   Splits: ``split="train"`` uses seeds from ``seed``; the held-out split (``"heldout"``) uses a
   disjoint seed range, background families never seen in training (stripes/plasma vs.
   gradient/blobs) and a different placement rule (free placement with rejection instead of
   jittered column slots), so positions differ too.

2. Loaders for the public layouts (for users who have the data; nothing is downloaded):

   VGG-SS (``VggSoundSourceDataset``)::

       root/frames/<id>.jpg         one frame per clip (the centre frame)
       root/audio/<id>.wav          the clip's audio (any rate; mixed to mono, 16 kHz)
       root/vggss.json              [{"file": "<id>", "bbox": [[x0, y0, x1, y1], ...]}, ...]
                                    boxes normalised to [0, 1] (as in VGG-SS' metadata)

   Flickr-SoundNet (``FlickrSoundNetDataset``)::

       root/frames/<id>.jpg
       root/audio/<id>.wav
       root/Annotations/<id>.xml    <annotation><object><bbox><xmin>..</xmin><ymin>..</ymin>
                                    <xmax>..</xmax><ymax>..</ymax></bbox></object>...</annotation>
                                    pixel boxes on the 256x256 frame, one box per annotator;
                                    the GT map is the annotators' consensus (metrics.flickr_gt_map)

   An optional ``root/test.csv`` (one id per line, first column) restricts the ids.

3. ``SimSceneAV``: the simulator's multi-talker scenes (``av_localization_ros.sim``): every
   camera frame of a ``SceneRecording`` with the ground-truth boxes of the talkers that are
   active at the frame's stamp, and the mono 16 kHz mix of the last ``WINDOW_S`` of array audio
   ending at that stamp. Frames with active talkers but none in view are "offscreen", frames
   with nobody active "silent". All talkers are category 4 ("talker").

All samples are dicts: ``image`` (H, W, 3) uint8 BGR, ``audio`` (n,) float32 16 kHz mono,
``boxes`` (k, 4) float32 normalised [x0, y0, x1, y1] of the *sounding, visible* objects,
``labels`` (k,) int64 categories, ``kind`` in {"sounding", "silent", "offscreen"}.
"""
from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio_features import SAMPLE_RATE, WINDOW_S, to_mono_16k

CATEGORIES = ("bell", "drum", "siren", "engine", "talker")
N_CATEGORIES = len(CATEGORIES)
HELDOUT_SEED_OFFSET = 1_000_003

# ---------------------------------------------------------------------------------------------
# sounds


def _norm(x: np.ndarray, rms: float) -> np.ndarray:
    r = float(np.sqrt(np.mean(x ** 2)) + 1e-9)
    return (x * (rms / r)).astype(np.float32)


def _bandnoise(rng, n, lo, hi, fs=SAMPLE_RATE):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(f < lo) | (f > hi)] = 0.0
    return np.fft.irfft(spec, n)


def synth_sound(category: int, rng: np.random.Generator, duration_s: float = WINDOW_S,
                fs: int = SAMPLE_RATE) -> np.ndarray:
    """One clip of the given category's sound family (float32, RMS 0.1)."""
    n = int(round(duration_s * fs))
    t = np.arange(n) / fs
    if category == 0:  # bell: inharmonic partials, struck every 0.25-0.5 s
        f0 = rng.uniform(700, 1100)
        period = rng.uniform(0.25, 0.5)
        tt = (t + rng.uniform(0, period)) % period
        env = np.exp(-tt * rng.uniform(6, 12))
        x = sum(a * np.sin(2 * np.pi * f0 * r * t + rng.uniform(0, 6.28))
                for r, a in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.35)))
        x = x * env
    elif category == 1:  # drum: clicks + low body
        rate = rng.uniform(4, 10)
        period = 1.0 / rate
        tt = (t + rng.uniform(0, period)) % period
        body = np.sin(2 * np.pi * rng.uniform(60, 140) * tt) * np.exp(-tt * 30)
        burst = _bandnoise(rng, n, 800, 5000) * np.exp(-tt * 120) * 3.0
        x = body + burst
    elif category == 2:  # siren: FM chirp
        fc = rng.uniform(1100, 1700)
        dev = rng.uniform(400, 800)
        fm = rng.uniform(1.0, 3.0)
        phase = 2 * np.pi * fc * t - dev / fm * np.cos(2 * np.pi * fm * t + rng.uniform(0, 6.28))
        x = np.sin(phase) + 0.3 * np.sin(2 * phase)
    elif category == 3:  # engine: low noise band with firing modulation
        c = rng.uniform(120, 400)
        x = _bandnoise(rng, n, c * 0.6, c * 1.6)
        x = x * (1.0 + 0.8 * np.sin(2 * np.pi * rng.uniform(20, 40) * t))
    elif category == 4:  # talker: harmonic source, formants, syllable AM
        f0 = rng.uniform(100, 240) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        phase = 2 * np.pi * np.cumsum(f0) / fs
        x = sum(np.sin(k * phase) / k for k in range(1, 30))
        spec = np.fft.rfft(x)
        f = np.fft.rfftfreq(n, 1.0 / fs)
        env = sum(np.exp(-0.5 * ((f - fm) / bw) ** 2)
                  for fm, bw in ((rng.uniform(400, 800), 120), (rng.uniform(1100, 1900), 180),
                                 (rng.uniform(2300, 3000), 250)))
        x = np.fft.irfft(spec * (env + 0.02), n)
        syl = rng.uniform(3, 6)
        am = np.clip(np.sin(2 * np.pi * syl * t + rng.uniform(0, 6.28)), 0, None) ** 0.7
        x = x * am
    else:
        raise ValueError(f"unknown category {category}")
    return _norm(np.asarray(x, dtype=np.float64), 0.1)


# ---------------------------------------------------------------------------------------------
# images

_HUES = {0: 25, 1: 0, 2: 112, 3: 60, 4: 150}  # OpenCV hue (0..180): orange, red, blue, green, magenta


def _colour(category: int, rng) -> tuple[int, int, int]:
    import cv2
    h = (_HUES[category] + rng.integers(-6, 7)) % 180
    hsv = np.uint8([[[h, rng.integers(170, 256), rng.integers(150, 256)]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _background(family: str, size: int, rng) -> np.ndarray:
    """Desaturated background (float32 BGR 0..255) of one of the families."""
    import cv2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(40, 210, 3), rng.uniform(40, 210, 3)
    if family == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        w = (np.cos(a) * xx + np.sin(a) * yy)
        w = (w - w.min()) / (np.ptp(w) + 1e-6)
        img = c1 * (1 - w[..., None]) + c2 * w[..., None]
    elif family == "blobs":
        small = rng.uniform(40, 210, (6, 6, 3)).astype(np.float32)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    elif family == "stripes":
        a = rng.uniform(0, np.pi)
        f = rng.uniform(3, 9)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * f * (np.cos(a) * xx + np.sin(a) * yy))
        img = c1 * (1 - w[..., None]) + c2 * w[..., None]
    elif family == "plasma":
        small = rng.uniform(40, 210, (12, 12, 3)).astype(np.float32)
        img = cv2.GaussianBlur(cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR),
                               (0, 0), size / 40)
    else:
        raise ValueError(family)
    img = np.asarray(img, np.float32)
    grey = img.mean(axis=-1, keepdims=True)
    img = 0.35 * img + 0.65 * grey  # desaturate: objects are the saturated things
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return img


def _draw_object(img: np.ndarray, category: int, box_px, rng) -> None:
    """Draw category ``category`` filling the pixel box ``(x0, y0, x1, y1)`` (in place)."""
    import cv2
    x0, y0, x1, y1 = (int(round(v)) for v in box_px)
    w, h = max(x1 - x0, 2), max(y1 - y0, 2)
    col = _colour(category, rng)
    dark = tuple(int(0.45 * c) for c in col)
    mask = np.zeros(img.shape[:2], np.uint8)
    cx, cy = x0 + w // 2, y0 + h // 2
    if category == 0:
        cv2.ellipse(mask, (cx, cy), (w // 2, h // 2), 0, 0, 360, 255, -1)
    elif category in (1, 3):
        cv2.rectangle(mask, (x0, y0), (x1 - 1, y1 - 1), 255, -1)
    elif category == 2:
        pts = np.array([[cx, y0], [x0, y1 - 1], [x1 - 1, y1 - 1]], np.int32)
        cv2.fillPoly(mask, [pts], 255)
    elif category == 4:
        r = max(min(w, h) // 4, 2)
        cv2.circle(mask, (cx, y0 + r), r, 255, -1)
        cv2.ellipse(mask, (cx, y0 + 2 * r + (h - 2 * r) // 2), (w // 2, max((h - 2 * r) // 2, 1)),
                    0, 0, 360, 255, -1)
    layer = np.empty_like(img)
    layer[:] = col
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    if category == 0:  # rings
        rr = np.hypot((xx - cx) / max(w, 1), (yy - cy) / max(h, 1))
        ring = (np.sin(rr * 60) > 0.3)
        layer[ring] = dark
    elif category == 1:  # horizontal stripes
        layer[((yy - y0) // max(h // 8, 2)) % 2 == 1] = dark
    elif category == 3:  # checker
        s = max(min(w, h) // 5, 2)
        layer[(((xx - x0) // s + (yy - y0) // s) % 2) == 1] = dark
    elif category == 2:  # a lamp band
        layer[(yy > y0 + 0.55 * h) & (yy < y0 + 0.7 * h)] = (240, 240, 255)
    m = mask > 0
    img[m] = layer[m]


# ---------------------------------------------------------------------------------------------
# the synthetic dataset


@dataclass
class SyntheticConfig:
    n_samples: int = 3000
    image_size: int = 160  # rendered square (the network's input size)
    split: str = "train"  # train | heldout
    seed: int = 0
    p_sounding: tuple = (0.45, 0.35, 0.20)  # P(1, 2, 3 sounding objects)
    p_distractor: float = 0.35  # P(one silent distractor | < 3 sounding)
    p_silent: float = 0.0  # share of silent pairs (no sound, no box)
    p_offscreen: float = 0.0  # share of off-screen pairs (sound of an invisible category)
    noise_rms: float = 0.005


class SyntheticAV:
    """Indexable, deterministic (sample ``i`` of a config is always the same)."""

    def __init__(self, cfg: SyntheticConfig | None = None, **kw):
        self.cfg = cfg or SyntheticConfig(**kw)
        if self.cfg.split not in ("train", "heldout"):
            raise ValueError("split must be 'train' or 'heldout'")

    def __len__(self) -> int:
        return self.cfg.n_samples

    def _rng(self, i: int) -> np.random.Generator:
        base = self.cfg.seed + (HELDOUT_SEED_OFFSET if self.cfg.split == "heldout" else 0)
        return np.random.default_rng([base, i])

    def _layout(self, k: int, rng) -> list[tuple[float, float, float, float]]:
        """Normalised boxes for k objects. Train: jittered columns; held-out: free placement."""
        boxes = []
        if k == 1:
            w, h = rng.uniform(0.45, 0.75), rng.uniform(0.5, 0.9)
            x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            return [(x0, y0, x0 + w, y0 + h)]
        wmax = 0.48 if k == 2 else 0.32
        wmin = 0.38 if k == 2 else 0.27
        ws = rng.uniform(wmin, wmax, k)
        hs = rng.uniform(0.5 if k == 2 else 0.55, 0.9, k)
        if self.cfg.split == "train":
            slot = 1.0 / k
            order = rng.permutation(k)
            for j in range(k):
                x0 = order[j] * slot + rng.uniform(0, slot - ws[j])
                y0 = rng.uniform(0, 1 - hs[j])
                boxes.append((x0, y0, x0 + ws[j], y0 + hs[j]))
        else:  # free placement: random left-to-right gaps
            slack = 1.0 - ws.sum()
            gaps = rng.dirichlet(np.ones(k + 1)) * slack
            x = gaps[0]
            for j in range(k):
                y0 = rng.uniform(0, 1 - hs[j])
                boxes.append((x, y0, x + ws[j], y0 + hs[j]))
                x += ws[j] + gaps[j + 1]
            boxes = [boxes[j] for j in rng.permutation(k)]
        return boxes

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        cfg = self.cfg
        rng = self._rng(i)
        u = rng.uniform()
        kind = ("silent" if u < cfg.p_silent else
                "offscreen" if u < cfg.p_silent + cfg.p_offscreen else "sounding")
        n_sound = int(rng.choice(3, p=np.asarray(cfg.p_sounding) / np.sum(cfg.p_sounding))) + 1
        n_dis = int(n_sound < 3 and rng.uniform() < cfg.p_distractor)
        if kind != "sounding":  # visible objects, none of them sounding
            n_dis, n_sound_vis = max(1, n_sound + n_dis - (kind == "offscreen")), 0
            n_dis = min(n_dis, 3 if kind == "silent" else 2)
        else:
            n_sound_vis = n_sound
        cats = rng.permutation(N_CATEGORIES)
        vis_cats = list(cats[:n_sound_vis + n_dis])
        sounding = vis_cats[:n_sound_vis]
        boxes = self._layout(len(vis_cats), rng)
        families = ("gradient", "blobs") if cfg.split == "train" else ("stripes", "plasma")
        s = cfg.image_size
        img = _background(families[int(rng.integers(len(families)))], s, rng)
        for c, b in sorted(zip(vis_cats, boxes), key=lambda cb: cb[1][3]):  # far (higher) first
            _draw_object(img, int(c), np.asarray(b) * s, rng)
        image = np.clip(img, 0, 255).astype(np.uint8)
        n = int(round(WINDOW_S * SAMPLE_RATE))
        audio = rng.normal(0, cfg.noise_rms, n).astype(np.float32)
        if kind == "sounding":
            for c in sounding:
                audio += synth_sound(int(c), rng) * rng.uniform(0.6, 1.4)
        elif kind == "offscreen":
            audio += synth_sound(int(cats[-1]), rng)  # cats[-1] is never visible (<= 4 shown)
        sb = [boxes[j] for j in range(len(vis_cats)) if j < n_sound_vis]
        return {
            "image": image,
            "audio": audio,
            "boxes": np.asarray(sb, np.float32).reshape(-1, 4),
            "labels": np.asarray(sounding, np.int64),
            "kind": kind,
            "all_boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "all_labels": np.asarray(vis_cats, np.int64),
        }


# ---------------------------------------------------------------------------------------------
# public layouts


def _read_audio(path: Path) -> np.ndarray:
    try:
        import soundfile as sf
        x, fs = sf.read(str(path), dtype="float32", always_2d=True)
        x = x.T
    except ImportError:  # pragma: no cover
        from scipy.io import wavfile
        fs, x = wavfile.read(str(path))
        x = np.asarray(x, np.float32)
        if x.dtype.kind == "i":
            x = x / 32768.0
        x = x.T if x.ndim == 2 else x
    return to_mono_16k(x, fs)


def _read_image(path: Path) -> np.ndarray:
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise IOError(f"cannot read image {path}")
    return img


def _centre_crop(audio: np.ndarray, dur_s: float = WINDOW_S) -> np.ndarray:
    n = int(round(dur_s * SAMPLE_RATE))
    if audio.size <= n:
        return audio
    s = (audio.size - n) // 2
    return audio[s:s + n]


class _FolderAV:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("frames", "audio"):
            if not (self.root / sub).is_dir():
                raise FileNotFoundError(f"{self.root / sub} missing (see av/data.py for the layout)")
        frames = {p.stem for p in (self.root / "frames").glob("*.jpg")}
        audio = {p.stem for p in (self.root / "audio").glob("*.wav")}
        ids = frames & audio
        test_csv = self.root / "test.csv"
        if test_csv.exists():
            with open(test_csv) as f:
                ids &= {row[0].split(".")[0] for row in csv.reader(f) if row}
        self.ids = sorted(ids)

    def __len__(self):
        return len(self.ids)

    def _sample(self, i, boxes_norm, consensus):
        fid = self.ids[i]
        return {
            "id": fid,
            "image": _read_image(self.root / "frames" / f"{fid}.jpg"),
            "audio": _centre_crop(_read_audio(self.root / "audio" / f"{fid}.wav")),
            "boxes": np.asarray(boxes_norm, np.float32).reshape(-1, 4),
            "labels": np.zeros(len(boxes_norm), np.int64),
            "kind": "sounding" if len(boxes_norm) else "silent",
            "gt_format": consensus,
        }


class VggSoundSourceDataset(_FolderAV):
    """VGG-SS layout (see module docstring); GT map = union of boxes (``format='vggss'``)."""

    def __init__(self, root):
        super().__init__(root)
        with open(self.root / "vggss.json") as f:
            ann = json.load(f)
        self.boxes = {str(a["file"]).split(".")[0]: np.clip(np.asarray(a["bbox"], float), 0, 1)
                      for a in ann}
        self.ids = [i for i in self.ids if i in self.boxes]

    def __getitem__(self, i):
        return self._sample(i, self.boxes[self.ids[i]], "vggss")


class FlickrSoundNetDataset(_FolderAV):
    """Flickr-SoundNet layout; boxes are per annotator (256x256 pixels), GT = consensus map."""

    def __init__(self, root):
        super().__init__(root)
        self.ids = [i for i in self.ids if (self.root / "Annotations" / f"{i}.xml").exists()]

    @staticmethod
    def parse_xml(path) -> np.ndarray:
        root = ET.parse(str(path)).getroot()
        out = []
        for bb in root.iter("bbox"):
            vals = {c.tag.lower(): c.text for c in bb}
            if all(k in vals for k in ("xmin", "ymin", "xmax", "ymax")):
                out.append([float(vals[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            else:  # positional: first child is a label, then xmin ymin xmax ymax
                nums = [float(c.text) for c in list(bb)[1:5]]
                out.append(nums)
        return np.asarray(out, np.float32).reshape(-1, 4) / 256.0

    def __getitem__(self, i):
        boxes = self.parse_xml(self.root / "Annotations" / f"{self.ids[i]}.xml")
        return self._sample(i, boxes, "flickr")


# ---------------------------------------------------------------------------------------------
# simulator scenes


class SimSceneAV:
    """AV samples from simulator scenes.

    ``scenes``: ``SceneRecording`` objects (``sim.scene.simulate_scene`` output) or
    ``SceneConfig`` objects, simulated here. ``every_n_frames`` subsamples the camera frames.
    The audio window ends at the image stamp (at the very start of a scene, where less than
    ``WINDOW_S`` exists, the first ``WINDOW_S`` is used instead).
    """

    TALKER = CATEGORIES.index("talker")

    def __init__(self, scenes, every_n_frames: int = 1):
        recs = []
        for sc in scenes:
            if not hasattr(sc, "images"):
                from ..sim.scene import simulate_scene
                sc = simulate_scene(sc)
            if not sc.images:
                raise ValueError("scene has no camera frames (camera_enabled=False?)")
            recs.append(sc)
        self.recordings = recs
        self.items = [(r, j) for r in recs for j in range(0, len(r.images), max(1, every_n_frames))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        rec, j = self.items[i]
        frame = rec.images[j]
        h, w = frame.image.shape[:2]
        gts = rec.ground_truth
        gt = min(gts, key=lambda g: abs(g.stamp_ns - frame.stamp_ns))
        active = [sp for sp in gt.speakers if sp.active]
        boxes = []
        for sp in active:
            if sp.box is None:
                continue
            x0, y0, x1, y1 = sp.box
            b = np.clip([x0 / w, y0 / h, x1 / w, y1 / h], 0.0, 1.0)
            if b[2] > b[0] and b[3] > b[1]:
                boxes.append(b)
        kind = "sounding" if boxes else ("offscreen" if active else "silent")
        fs = int(rec.sample_rate)
        n = int(round(WINDOW_S * fs))
        end = int(round((frame.stamp_ns - rec.start_ns) * fs / 1e9))
        end = min(max(end, n), rec.audio.shape[1])
        audio = to_mono_16k(rec.audio[:, max(0, end - n):end], fs)
        return {
            "image": frame.image,
            "audio": audio,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "labels": np.full(len(boxes), self.TALKER, np.int64),
            "kind": kind,
            "stamp_ns": int(frame.stamp_ns),
        }
