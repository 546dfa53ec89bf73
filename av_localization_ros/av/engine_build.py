"""TensorRT engines from the shipped ONNX graphs (ONNX -> serialized engine, FP16 by default).

Part of the package so that the TensorRT backend can build an engine on first use wherever the
package is installed; ``trt_build/build_engines.py`` is the command line for building ahead of
time (e.g. on the Jetson after an install).

Engines are cached under ``cache_dir`` as ``<stem>.<key>.engine``; the key is the sha256 of
(ONNX bytes, TensorRT version, GPU model name, GPU compute capability, precision flags), so a
new model, a TensorRT upgrade, another GPU (engines are specific to the GPU model they were
built on, not only to its compute capability) or another precision all rebuild instead of
loading a stale or incompatible engine. Written against the TensorRT 10 Python API (Builder /
network / OnnxParser / IBuilderConfig / build_serialized_network), with the explicit-batch
network flag that TensorRT 8.x still needs; ``tensorrt`` is imported lazily.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "AVLOC_TRT_CACHE"
WORKSPACE_BYTES = 1 << 30


def default_cache_dir() -> Path:
    """``$AVLOC_TRT_CACHE``, else ``~/.cache/av_localization_ros/trt_engines`` (an installed
    package's own folder is usually not writable)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "av_localization_ros" / "trt_engines"


class TensorRTUnavailable(RuntimeError):
    """tensorrt (or a CUDA device) is not available here."""


def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except Exception as e:  # ImportError, or a broken CUDA install raising at import
        raise TensorRTUnavailable(f"tensorrt not installed ({type(e).__name__}: {e})") from e
    return trt


def gpu_identity() -> tuple[str, str]:
    """``(model name, 'major.minor' compute capability)`` of CUDA device 0, via torch.cuda or
    cuda-python; raises TensorRTUnavailable if there is no GPU."""
    try:
        import torch
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        from cuda import cudart  # cuda-python
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) \
                else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    raise TensorRTUnavailable("no CUDA device found")


def precision_flags(fp16: bool = True) -> tuple[str, ...]:
    return ("fp16",) if fp16 else ("fp32",)


def engine_cache_key(onnx_bytes: bytes, trt_version: str, gpu_name: str, compute_cap: str,
                     flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    for part in (trt_version, gpu_name, compute_cap, ",".join(sorted(flags))):
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
    flags = 0
    if int(str(trt.__version__).split(".")[0]) < 10:
        # 8.x: the ONNX parser needs an explicit-batch network (10.x: the only mode, the flag
        # deprecated and ignored)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse the ONNX graph: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):  # removed after the 10.x deprecation
            raise RuntimeError(f"TensorRT {trt.__version__} has no FP16 builder flag; build "
                               "with fp16=False")
        if not getattr(builder, "platform_has_fast_fp16", True):  # deprecated in 10.5
            log.warning("this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the TensorRT log)")
    return bytes(serialized)


def get_or_build_engine(onnx_path: str | Path, cache_dir: str | Path | None = None,
                        fp16: bool = True, rebuild: bool = False) -> Path:
    """The cached engine for this ONNX / TensorRT / GPU / precision, built if missing (or if
    ``rebuild``, e.g. after the cached one failed to deserialise)."""
    trt = import_tensorrt()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    onnx_bytes = Path(onnx_path).read_bytes()
    key = engine_cache_key(onnx_bytes, trt.__version__, *gpu_identity(), precision_flags(fp16))
    path = engine_path(onnx_path, cache_dir, key)
    if path.exists() and not rebuild:
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("building TensorRT engine %s (%s)", path.name, "fp16" if fp16 else "fp32")
    data = build_engine_bytes(onnx_bytes, fp16)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent builders: own files
    tmp.write_bytes(data)
    tmp.replace(path)  # atomic: a reader sees the old engine or the whole new one
    return path
