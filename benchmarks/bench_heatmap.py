"""Per-frame latency of the image encoder + similarity map: ONNX Runtime CPU vs PyTorch eager.

    .venv/bin/python benchmarks/bench_heatmap.py [--threads 2] [--frames 200] [--size 480x640]

Both paths do the same per-frame work on a BGR camera frame: resize to the network input,
image encoder, cosine map with a cached audio embedding, heatmap resized to the frame.
ONNX Runtime runs the shipped models/image_encoder.onnx (what the Pipeline runs, through
HeatmapRunner.infer); PyTorch eager runs the same weights (models/av_model.pt).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from av_localization_ros.core.types import AudioWindow  # noqa: E402


def stats(ms: np.ndarray) -> dict:
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "fps": float(1000.0 / ms.mean())}


def time_interleaved(fns, frames, warmup=10):
    """Per-frame ms of each fn; the fns alternate frame by frame so that both see the same
    machine load (this machine's cores are shared)."""
    for f in frames[:warmup]:
        for fn in fns:
            fn(f)
    out = [[] for _ in fns]
    for f in frames:
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn(f)
            out[i].append((time.perf_counter() - t0) * 1e3)
    return [np.asarray(o) for o in out]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--size", default="480x640", help="camera frame HxW")
    ap.add_argument("--model-dir", default=None)
    a = ap.parse_args(argv)
    import cv2
    import torch

    from av_localization_ros.av.model import AVModel, ModelConfig
    from av_localization_ros.av.runtime import HeatmapRunner
    torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(8)]
    frames = [frames[i % 8] for i in range(a.frames)]

    runner = HeatmapRunner(a.model_dir, backend="onnxruntime", intra_op_threads=a.threads)
    t = np.arange(16000) / 16000.0
    runner.set_audio(AudioWindow((0.1 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32),
                                 0, 16000))

    ck = torch.load(runner.model_dir / "av_model.pt", map_location="cpu", weights_only=False)
    mc = ModelConfig(**{**ck["model_config"], "pretrained": False})
    mc.input_size = tuple(mc.input_size)
    model = AVModel(mc).eval()
    model.load_state_dict(ck["model"])
    emb = torch.from_numpy(runner._emb)
    ih, iw = mc.input_size

    @torch.no_grad()
    def torch_frame(f):
        x = cv2.resize(f, (iw, ih), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None].float()
        v = model.image_encoder(x)[0]
        cos = torch.einsum("chw,c->hw", v, emb).numpy()
        m = np.clip((cos - runner._cos_lo) / (runner._cos_hi - runner._cos_lo), 0, 1)
        return cv2.resize(m, (f.shape[1], f.shape[0]), interpolation=cv2.INTER_LINEAR)

    ort_ms, torch_ms = time_interleaved([lambda f: runner.infer(f), torch_frame], frames)
    so, st = stats(ort_ms), stats(torch_ms)
    print(f"frame {w}x{h} -> network {iw}x{ih}, {a.threads} threads, {a.frames} frames "
          f"(interleaved)")
    print(f"{'backend':<22}{'mean ms':>9}{'p50 ms':>9}{'p99 ms':>9}{'FPS':>8}")
    for name, s in (("onnxruntime CPU", so), ("pytorch eager", st)):
        print(f"{name:<22}{s['mean_ms']:9.2f}{s['p50_ms']:9.2f}{s['p99_ms']:9.2f}{s['fps']:8.1f}")
    print(f"speed-up onnxruntime / pytorch (mean latency ratio): {st['mean_ms'] / so['mean_ms']:.2f}x")
    return {"onnxruntime": so, "torch": st}


if __name__ == "__main__":
    main()
