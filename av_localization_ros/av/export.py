"""Export a trained checkpoint to the two ONNX graphs the runtime loads.

    python -m av_localization_ros.av.export --checkpoint out/av_train/latest.pt --out models/ \
        [--metrics out/av_train/metrics.json]

Writes ``image_encoder.onnx`` (``image`` (1, 3, H, W) float32 BGR 0..255 -> ``features``
(1, D, H/s, W/s), L2-normalised), ``audio_encoder.onnx`` (``log_mel`` (1, 1, 64, 96) ->
``embedding`` (1, D), L2-normalised), ``av_model.pt`` (the torch weights) and ``av_model.json`` (shapes, tau, calibration constants,
sha256 of each graph). Opset 17, static shapes, constant-folded, and checked against
``ALLOWED_OPS``: ops with a native TensorRT 10 ONNX-parser implementation that need no plugin.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .audio_features import HOP, N_FFT, N_FRAMES, N_MELS, SAMPLE_RATE, WINDOW_S
from .model import AVModel

OPSET = 17
IMAGE_ONNX = "image_encoder.onnx"
AUDIO_ONNX = "audio_encoder.onnx"
META_JSON = "av_model.json"
TORCH_WEIGHTS = "av_model.pt"  # state_dict + model config (fine-tuning, benchmarks, parity)
IMAGE_INPUT, IMAGE_OUTPUT = "image", "features"
AUDIO_INPUT, AUDIO_OUTPUT = "log_mel", "embedding"

# Ops our graphs may contain. All are supported by TensorRT 10's ONNX parser (onnx-tensorrt
# "Supported operators" list) in FP32 and FP16 without plugins; anything else fails the export.
ALLOWED_OPS = frozenset({
    "Conv", "Relu", "Clip", "Pad", "Add", "Sub", "Mul", "Div", "Sqrt", "Max", "Abs",
    "ReduceMax", "ReduceMean", "ReduceSum", "ReduceL2", "Pow", "Gemm", "MatMul",
    "BatchNormalization", "GlobalAveragePool", "Flatten", "Reshape", "Transpose",
    "Unsqueeze", "Squeeze", "Concat", "Constant", "Identity", "Slice", "MaxPool",
})


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def graph_ops(path: str | Path) -> set[str]:
    import onnx
    m = onnx.load(str(path))
    return {n.op_type for n in m.graph.node}


def check_onnx(path: str | Path) -> None:
    """onnx.checker + opset + op allow-list + no oversized constants (FP16 range)."""
    import onnx
    from onnx import numpy_helper
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < OPSET:
        raise ValueError(f"{path}: opset {opset} < {OPSET}")
    bad = graph_ops(path) - ALLOWED_OPS
    if bad:
        raise ValueError(f"{path}: ops outside the TensorRT allow-list: {sorted(bad)}")
    for init in m.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype.kind == "f" and a.size and np.abs(a).max() > 6.0e4:
            raise ValueError(f"{path}: initializer {init.name} exceeds the FP16 range")


def fold_constants(path: str | Path) -> None:
    """Constant-fold the graph in place with ONNX Runtime's *basic* (ONNX-standard) optimiser:
    folds the legacy exporter's Pad bookkeeping (Shape/ConstantOfShape/Cast/Slice chains) into
    constants and fuses Conv+BN/Add; the result uses standard ONNX ops only."""
    import onnx
    import onnxruntime as ort
    path = Path(path)
    tmp = path.with_suffix(".folded.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    m = onnx.load(str(tmp))
    tmp.unlink()
    # keep only the default-domain opset import and the producer info
    del m.opset_import[:]
    m.opset_import.append(onnx.helper.make_opsetid("", OPSET))
    m.producer_name = "av_localization_ros.av.export"
    onnx.save(m, str(path))


class _ImageGraph(torch.nn.Module):
    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, image):
        return self.enc(image)


def export(model: AVModel, out_dir: str | Path, calibration: dict | None = None,
           metrics: dict | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    h, w = model.cfg.input_size
    img = torch.zeros(1, 3, h, w)
    mel = torch.zeros(1, 1, N_MELS, N_FRAMES)
    with torch.no_grad():
        feat_shape = list(model.image_encoder(img).shape)
        torch.onnx.export(_ImageGraph(model.image_encoder).eval(), (img,), str(out / IMAGE_ONNX),
                          dynamo=False, opset_version=OPSET, input_names=[IMAGE_INPUT],
                          output_names=[IMAGE_OUTPUT], do_constant_folding=True)
        torch.onnx.export(model.audio_encoder, (mel,), str(out / AUDIO_ONNX), dynamo=False,
                          opset_version=OPSET, input_names=[AUDIO_INPUT],
                          output_names=[AUDIO_OUTPUT], do_constant_folding=True)
    model.eval()  # the exporter restores each wrapper's mode; keep the caller's model in eval
    for f in (IMAGE_ONNX, AUDIO_ONNX):
        fold_constants(out / f)
        check_onnx(out / f)
    meta = {
        "format_version": 1,
        "backbone": model.cfg.backbone,
        "stride": model.cfg.stride,
        "input_size": [h, w],
        "embed_dim": model.cfg.dim,
        "tau": model.cfg.tau,
        "image": {"file": IMAGE_ONNX, "input": IMAGE_INPUT, "input_shape": [1, 3, h, w],
                  "input_format": "float32 BGR 0..255, NCHW", "output": IMAGE_OUTPUT,
                  "output_shape": feat_shape},
        "audio": {"file": AUDIO_ONNX, "input": AUDIO_INPUT,
                  "input_shape": [1, 1, N_MELS, N_FRAMES], "output": AUDIO_OUTPUT,
                  "output_shape": [1, model.cfg.dim], "sample_rate": SAMPLE_RATE,
                  "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "window_s": WINDOW_S},
        "calibration": calibration or {"cos_lo": 0.0, "cos_hi": 1.0, "conf_lo": 0.5, "conf_hi": 1.0},
        "opset": OPSET,
        "sha256": {f: sha256_file(out / f) for f in (IMAGE_ONNX, AUDIO_ONNX)},
    }
    if metrics:
        meta["metrics"] = metrics
    (out / META_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def save_torch_weights(model: AVModel, path: str | Path) -> None:
    import dataclasses
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.cfg)},
               str(path))


def main(argv=None):
    from .train import load_checkpoint
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", default="models")
    ap.add_argument("--metrics", help="metrics.json from train --eval / evaluate (optional)")
    a = ap.parse_args(argv)
    model = load_checkpoint(a.checkpoint)
    res = json.loads(Path(a.metrics).read_text()) if a.metrics else {}
    cal = res.pop("calibration", None)
    meta = export(model, a.out, cal, res or None)
    save_torch_weights(model, Path(a.out) / TORCH_WEIGHTS)
    meta["sha256"][TORCH_WEIGHTS] = sha256_file(Path(a.out) / TORCH_WEIGHTS)
    (Path(a.out) / META_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta["sha256"], indent=2))


if __name__ == "__main__":
    main()
