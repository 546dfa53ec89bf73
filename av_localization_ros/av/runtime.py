"""HeatmapRunner: what the Pipeline calls on every camera frame.

    runner = HeatmapRunner()                       # shipped models/, backend auto
    runner.set_audio(window)                       # AudioWindow; embedding cached at audio_rate_hz
    heatmap, confidence = runner.infer(image_bgr)  # (H, W) float32 in [0, 1], float in [0, 1]
                                                   # (or infer(image, out_shape=(h, w)))

Per frame: resize to the network input (INTER_AREA), image encoder (ONNX Runtime or TensorRT),
cosine map = features . audio embedding (numpy, D x h*w), heatmap = cosine mapped through the
calibration window ``[cos_lo, cos_hi]`` of av_model.json and bilinearly resized to the image;
confidence = SLAVC's score (mean of the top 25% of (cos + 1) / 2 on the 224x224 upsampled map)
mapped through ``[conf_lo, conf_hi]`` (silent/off-screen median -> 0, sounding median -> 1).
Before the first ``set_audio`` there is no embedding: ``infer`` returns zeros and 0.0.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from ..core.types import NS_PER_S, AudioWindow
from . import metrics as M
from .audio_features import HOP, N_FFT, N_FRAMES, N_MELS, SAMPLE_RATE, WINDOW_S, log_mel, \
    to_mono_16k
from .backends import InferenceBackend, select_backend
from .export import (AUDIO_INPUT, AUDIO_ONNX, AUDIO_OUTPUT, IMAGE_INPUT, IMAGE_ONNX,
                     IMAGE_OUTPUT, META_JSON)

log = logging.getLogger(__name__)

MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 16384
N_SAMPLES_MIN_S = 0.1  # shortest audio window a model may declare
MIN_AUDIO_FRACTION = 0.5  # set_audio needs at least this part of the model's audio window


class ModelMismatchError(ValueError):
    """The model files do not match what the runtime expects (names, shapes, metadata)."""


class ImageInputError(ValueError):
    """The image is not an (H, W, 3) uint8 BGR array of a usable size."""


def default_model_dir() -> Path:
    """The repo's models/ (source checkout), else the installed package share / resources."""
    here = Path(__file__).resolve().parents[2] / "models"
    if (here / META_JSON).exists():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory
        p = Path(get_package_share_directory("av_localization_ros")) / "models"
        if (p / META_JSON).exists():
            return p
    except Exception:
        pass
    try:
        from importlib.resources import files
        p = Path(str(files("av_localization_ros"))) / "models"
        if (p / META_JSON).exists():
            return p
    except Exception:
        pass
    return here


def _check_spec(spec_list, name, shape, what):
    specs = {s.name: s for s in spec_list}
    if name not in specs:
        raise ModelMismatchError(f"{what}: expected a tensor named {name!r}, the model has "
                                 f"{sorted(specs)}")
    got = tuple(specs[name].shape)
    if len(got) != len(shape) or any(isinstance(g, int) and g != e for g, e in zip(got, shape)):
        raise ModelMismatchError(f"{what}: tensor {name!r} has shape {list(got)}, expected "
                                 f"{list(shape)}")
    if any(not isinstance(g, int) for g in got):
        raise ModelMismatchError(f"{what}: tensor {name!r} has dynamic axes {list(got)}; the "
                                 f"runtime expects static shapes {list(shape)}")


def _check_metadata(calibration: dict[str, float], audio: dict, window_s: float,
                    meta_path: Path) -> None:
    """ModelMismatchError unless the calibration windows are finite and ordered and the audio
    front end the model was trained with is this runtime's."""
    for lo, hi in (("cos_lo", "cos_hi"), ("conf_lo", "conf_hi")):
        a, b = calibration[lo], calibration[hi]
        if not (math.isfinite(a) and math.isfinite(b) and a < b):
            raise ModelMismatchError(f"{meta_path}: calibration needs finite {lo} < {hi}, "
                                     f"got {a}, {b}")
    if not (math.isfinite(window_s) and N_SAMPLES_MIN_S <= window_s <= 10.0):
        raise ModelMismatchError(f"{meta_path}: audio window_s {window_s} outside "
                                 f"[{N_SAMPLES_MIN_S}, 10] s")
    expected = {"sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS}
    wrong = {k: audio[k] for k, v in expected.items() if k in audio and audio[k] != v}
    if wrong:
        raise ModelMismatchError(f"{meta_path}: audio features {wrong} differ from this "
                                 f"runtime's {expected}")


class HeatmapRunner:
    def __init__(self, model_dir=None, backend: str = "auto", audio_rate_hz: float = 5.0,
                 intra_op_threads: int = 2):
        self.model_dir = Path(model_dir) if model_dir else default_model_dir()
        meta_path = self.model_dir / META_JSON
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found (export a model with "
                                    f"`python -m av_localization_ros.av.export`)")
        try:
            self.meta = json.loads(meta_path.read_text())
            h, w = (int(v) for v in self.meta["input_size"])
            d = int(self.meta["embed_dim"])
            feat_shape = tuple(int(v) for v in self.meta["image"]["output_shape"])
            cal = {k: float(self.meta["calibration"][k])
                   for k in ("cos_lo", "cos_hi", "conf_lo", "conf_hi")}
            audio = self.meta.get("audio", {})
            window_s = float(audio.get("window_s", WINDOW_S))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise ModelMismatchError(f"{meta_path}: malformed metadata ({e})") from e
        _check_metadata(cal, audio, window_s, meta_path)
        if audio_rate_hz <= 0:
            raise ValueError("audio_rate_hz must be > 0")
        self.input_size = (h, w)
        self.audio_window_s = window_s
        self.audio_rate_hz = float(audio_rate_hz)
        self._cos_lo, self._cos_hi = cal["cos_lo"], cal["cos_hi"]
        self._conf_lo, self._conf_hi = cal["conf_lo"], cal["conf_hi"]

        img_path, aud_path = self.model_dir / IMAGE_ONNX, self.model_dir / AUDIO_ONNX
        for p in (img_path, aud_path):
            if not p.exists():
                raise FileNotFoundError(f"{p} not found")
            expected = self.meta.get("sha256", {}).get(p.name)
            if expected is not None and hashlib.sha256(p.read_bytes()).hexdigest() != expected:
                raise ModelMismatchError(
                    f"{p} is not the graph {meta_path.name} was exported with (sha256 differs): "
                    "its calibration would not apply; re-export the model directory")
        self.image_backend: InferenceBackend = select_backend(backend, img_path,
                                                              intra_op_threads=intra_op_threads)
        self.audio_backend: InferenceBackend = select_backend(
            "onnxruntime" if self.image_backend.name == "onnxruntime" else backend, aud_path,
            intra_op_threads=1)
        self.backend_name = self.image_backend.name
        if len(feat_shape) != 4 or feat_shape[1] != d:
            raise ModelMismatchError(f"{meta_path}: feature shape {feat_shape} vs embed_dim {d}")
        _check_spec(self.image_backend.inputs, IMAGE_INPUT, (1, 3, h, w), IMAGE_ONNX)
        _check_spec(self.image_backend.outputs, IMAGE_OUTPUT, feat_shape, IMAGE_ONNX)
        _check_spec(self.audio_backend.inputs, AUDIO_INPUT, (1, 1, N_MELS, N_FRAMES), AUDIO_ONNX)
        _check_spec(self.audio_backend.outputs, AUDIO_OUTPUT, (1, d), AUDIO_ONNX)
        self.feature_shape = feat_shape
        self._emb: np.ndarray | None = None
        self._emb_stamp_ns: int | None = None
        self.timings_s: dict[str, float] = {}
        log.info("HeatmapRunner: %s backend, input %dx%d, model %s", self.backend_name, w, h,
                 self.model_dir)

    # -- audio ------------------------------------------------------------------------------

    def set_audio(self, window: AudioWindow) -> None:
        """Audio embedding of the window's most recent ``audio_window_s`` (mono mix -> log-mel ->
        audio encoder); recomputed only if the window's end stamp advanced by at least
        ``1 / audio_rate_hz`` since the cached one (or went backwards: replay restart)."""
        samples = np.asarray(window.samples)
        if samples.ndim != 2 or samples.shape[1] == 0 or samples.shape[0] == 0:
            raise ValueError(f"zero-length or malformed audio: samples shape {samples.shape}, "
                             f"expected (n_channels, n_samples) with n_samples > 0")
        if window.sample_rate <= 0:
            raise ValueError(f"bad sample rate {window.sample_rate}")
        if samples.shape[1] < MIN_AUDIO_FRACTION * self.audio_window_s * window.sample_rate:
            raise ValueError(f"audio window of {samples.shape[1] / window.sample_rate:.3f} s; "
                             f"the model embeds {self.audio_window_s} s")
        stamp = int(window.end_stamp_ns)
        if self._emb_stamp_ns is not None:
            dt = stamp - self._emb_stamp_ns
            if 0 <= dt < NS_PER_S / self.audio_rate_hz:
                return
        t0 = time.perf_counter()
        n_keep = int(round(self.audio_window_s * window.sample_rate))
        x = to_mono_16k(samples[:, -n_keep:], window.sample_rate)
        if not np.all(np.isfinite(x)):
            raise ValueError("audio contains NaN or inf")
        mel = log_mel(x)[None, None]
        out = self.audio_backend.run({AUDIO_INPUT: mel})
        self._emb = np.asarray(out[AUDIO_OUTPUT], np.float32).reshape(-1)
        self._emb_stamp_ns = stamp
        self.timings_s["audio_encoder"] = time.perf_counter() - t0

    # -- image ------------------------------------------------------------------------------

    @staticmethod
    def validate_image(image_bgr) -> np.ndarray:
        if not isinstance(image_bgr, np.ndarray):
            raise ImageInputError(f"image must be a numpy array, got {type(image_bgr).__name__}")
        if image_bgr.size == 0:
            raise ImageInputError(f"empty image (shape {image_bgr.shape})")
        if image_bgr.ndim == 2 or (image_bgr.ndim == 3 and image_bgr.shape[2] == 1):
            raise ImageInputError(f"grayscale image (shape {image_bgr.shape}); expected BGR "
                                  f"(H, W, 3) - convert mono8 with cv2.COLOR_GRAY2BGR")
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ImageInputError(f"image shape {image_bgr.shape}: expected (H, W, 3) bgr8 "
                                  f"(4 channels = bgra8/rgba8: drop alpha first)")
        if image_bgr.dtype != np.uint8:
            raise ImageInputError(f"image dtype {image_bgr.dtype}: expected uint8 bgr8 "
                                  f"(16-bit / float encodings are not supported)")
        h, w = image_bgr.shape[:2]
        if min(h, w) < MIN_IMAGE_SIDE or max(h, w) > MAX_IMAGE_SIDE:
            raise ImageInputError(f"image size {w}x{h} outside [{MIN_IMAGE_SIDE}, "
                                  f"{MAX_IMAGE_SIDE}] pixels per side")
        return image_bgr

    def _features(self, image_bgr: np.ndarray) -> np.ndarray:
        import cv2
        h, w = self.input_size
        img = image_bgr
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
        return self.image_backend.run({IMAGE_INPUT: x})[IMAGE_OUTPUT][0]  # (D, h', w')

    def cos_map(self, image_bgr: np.ndarray) -> np.ndarray:
        """Low-resolution cosine-similarity map (h', w') of the image with the cached audio."""
        self.validate_image(image_bgr)
        if self._emb is None:
            return np.zeros(self.feature_shape[2:], np.float32)
        f = self._features(image_bgr)
        d, hh, ww = f.shape
        return (self._emb @ f.reshape(d, hh * ww)).reshape(hh, ww).astype(np.float32)

    def confidence_from_cos(self, cos: np.ndarray) -> float:
        s = M.slavc_confidence(M.upsample_map(cos))
        return float(np.clip((s - self._conf_lo) / max(self._conf_hi - self._conf_lo, 1e-6), 0, 1))

    def infer(self, image_bgr: np.ndarray,
              out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
        """``(heatmap, confidence)``; the heatmap is ``out_shape`` ``(h, w)`` (default: the
        image's size), resized once from the network's low-resolution map."""
        import cv2
        self.validate_image(image_bgr)
        H, W = out_shape if out_shape is not None else image_bgr.shape[:2]
        if self._emb is None:
            return np.zeros((H, W), np.float32), 0.0
        t0 = time.perf_counter()
        cos = self.cos_map(image_bgr)
        t1 = time.perf_counter()
        m = np.clip((cos - self._cos_lo) / max(self._cos_hi - self._cos_lo, 1e-6), 0.0, 1.0)
        heat = cv2.resize(m.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        heat = np.clip(heat, 0.0, 1.0)
        conf = self.confidence_from_cos(cos)
        self.timings_s["image_encoder_map"] = t1 - t0
        self.timings_s["heatmap_post"] = time.perf_counter() - t1
        return heat, conf
