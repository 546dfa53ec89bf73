"""Build TensorRT engines from the shipped ONNX graphs (ONNX -> serialized engine, FP16).

    python trt_build/build_engines.py [--model-dir models/] [--cache trt_build/cache] [--fp32]

Engines are cached under ``cache_dir`` as ``<stem>.<key>.engine``; the key is the sha256 of
(ONNX bytes, TensorRT version, GPU compute capability, precision flags), so a new model, a
TensorRT upgrade, another GPU or another precision all rebuild instead of loading a stale or
incompatible engine. Written against the TensorRT 10 Python API (Builder / network /
OnnxParser / IBuilderConfig / build_serialized_network); ``tensorrt`` is imported lazily.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(__file__).resolve().parent / "cache"
WORKSPACE_BYTES = 1 << 30


class TensorRTUnavailable(RuntimeError):
    """tensorrt (or a CUDA device) is not available here."""


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        raise TensorRTUnavailable(f"tensorrt not installed ({type(e).__name__}: {e})") from e
    return trt


def compute_capability() -> str:
    """'8.7' style string of device 0, via torch.cuda or cuda-python; raises if no GPU."""
    try:
        import torch
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return f"{major}.{minor}"
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            return f"{props.major}.{props.minor}"
    except ImportError:
        pass
    raise TensorRTUnavailable("no CUDA device found")


def precision_flags(fp16: bool = True) -> tuple[str, ...]:
    return ("fp16",) if fp16 else ("fp32",)


def engine_cache_key(onnx_bytes: bytes, trt_version: str, compute_cap: str,
                     flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    for part in (trt_version, compute_cap, ",".join(sorted(flags))):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:24]


def engine_path(onnx_path: str | Path, cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{Path(onnx_path).stem}.{key}.engine"


def build_engine_bytes(onnx_bytes: bytes, fp16: bool = True,
                       workspace_bytes: int = WORKSPACE_BYTES) -> bytes:
    """Parse the ONNX graph and build a serialized engine (static shapes: no profile needed)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log)")
    return bytes(serialized)


def get_or_build_engine(onnx_path: str | Path, cache_dir: str | Path | None = None,
                        fp16: bool = True) -> Path:
    """The cached engine for this ONNX/TRT/GPU/precision, built if missing."""
    trt = import_tensorrt()
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    onnx_bytes = Path(onnx_path).read_bytes()
    key = engine_cache_key(onnx_bytes, trt.__version__, compute_capability(), precision_flags(fp16))
    path = engine_path(onnx_path, cache_dir, key)
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("building TensorRT engine %s (%s)", path.name, "fp16" if fp16 else "fp32")
    data = build_engine_bytes(onnx_bytes, fp16)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=str(Path(__file__).resolve().parents[1] / "models"))
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--fp32", action="store_true", help="build FP32 engines instead of FP16")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        for name in ("image_encoder.onnx", "audio_encoder.onnx"):
            p = get_or_build_engine(Path(a.model_dir) / name, a.cache, fp16=not a.fp32)
            print(p)
    except TensorRTUnavailable as e:
        print(f"cannot build engines: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
