"""Inference backends for the exported ONNX graphs.

``InferenceBackend`` is the protocol the runtime uses: ``run({name: array}) -> {name: array}``
plus ``inputs`` / ``outputs`` specs. Implementations:

* ``OnnxRuntimeBackend``: CPU here (intra-op threads configurable, default 2); uses the CUDA
  execution provider first when onnxruntime-gpu offers it.
* ``TensorRTBackend``: deserialises the cached engine for (ONNX bytes, TRT version, GPU model,
  compute capability, precision) or builds it (:mod:`.engine_build`; a cached engine that
  does not deserialise is rebuilt once); runs it with the TensorRT 10 name-based API
  (``set_tensor_address`` + ``execute_async_v3``) on torch CUDA buffers, after checking each
  input's shape and dtype against the engine's. ``tensorrt`` is imported lazily, so importing
  this module never needs it.

``select_backend("auto", path)`` tries TensorRT and falls back to ONNX Runtime, logging why.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple  # ints; a str / None entry marks a dynamic axis
    dtype: str  # numpy dtype name, e.g. "float32"


@runtime_checkable
class InferenceBackend(Protocol):
    name: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (missing package, no GPU, build failure)."""


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(uint8)": "uint8", "tensor(int32)": "int32"}


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, intra_op_threads: int = 2,
                 providers: list[str] | None = None):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(intra_op_threads)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        if providers is None:
            avail = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=providers)
        self.providers = self.session.get_providers()
        self.inputs = [TensorSpec(i.name, tuple(i.shape), _ORT_TYPES.get(i.type, i.type))
                       for i in self.session.get_inputs()]
        self.outputs = [TensorSpec(o.name, tuple(o.shape), _ORT_TYPES.get(o.type, o.type))
                        for o in self.session.get_outputs()]
        self._out_names = [o.name for o in self.outputs]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.session.run(self._out_names, inputs)
        return dict(zip(self._out_names, res))


def tensorrt_available() -> tuple[bool, str]:
    """(available, reason) without building anything."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "tensorrt not installed"
    try:
        import torch
        if not torch.cuda.is_available():
            return False, "no CUDA device (torch.cuda.is_available() is False)"
    except ImportError:
        return False, "torch with CUDA is needed for the TensorRT buffers"
    return True, ""


def check_input(spec: TensorSpec, value) -> None:
    """ValueError unless ``value`` is an array of ``spec``'s dtype and (static) shape, as ONNX
    Runtime requires too."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"input {spec.name!r} missing or not an array")
    shape_ok = len(value.shape) == len(spec.shape) and all(
        not isinstance(d, int) or d < 0 or d == v for d, v in zip(spec.shape, value.shape))
    if not shape_ok or value.dtype != np.dtype(spec.dtype):
        raise ValueError(f"input {spec.name!r}: got {value.dtype} {value.shape}, the engine "
                         f"takes {spec.dtype} {spec.shape}")


class TensorRTBackend:
    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, cache_dir: str | Path | None = None,
                 fp16: bool = True):
        ok, why = tensorrt_available()
        if not ok:
            raise BackendUnavailable(why)
        import tensorrt as trt
        import torch

        from . import engine_build
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = None
        for rebuild in (False, True):  # a cached engine that does not load is rebuilt once
            engine_file = engine_build.get_or_build_engine(onnx_path, cache_dir, fp16=fp16,
                                                           rebuild=rebuild)
            self.engine = self._runtime.deserialize_cuda_engine(Path(engine_file).read_bytes())
            if self.engine is not None:
                break
            log.warning("could not deserialise %s%s", engine_file,
                        "" if rebuild else "; rebuilding it")
        if self.engine is None:
            raise BackendUnavailable(f"could not deserialise {engine_file}")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.inputs, self.outputs, self._buf = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            spec = TensorSpec(name, shape, dtype.name)
            is_in = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_in else self.outputs).append(spec)
            t = torch.empty(shape, dtype=getattr(torch, dtype.name), device="cuda")
            self._buf[name] = t
            self.context.set_tensor_address(name, t.data_ptr())

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch
        for spec in self.inputs:  # copy_ would broadcast and cast a wrong input silently
            check_input(spec, inputs.get(spec.name))
        with torch.cuda.stream(self.stream):
            for spec in self.inputs:
                self._buf[spec.name].copy_(torch.from_numpy(np.ascontiguousarray(inputs[spec.name])),
                                           non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            out = {s.name: self._buf[s.name].to("cpu", non_blocking=True) for s in self.outputs}
        self.stream.synchronize()
        return {k: v.numpy().astype(np.float32, copy=False) for k, v in out.items()}


def select_backend(name: str, onnx_path: str | Path, *, intra_op_threads: int = 2,
                   trt_cache_dir: str | Path | None = None, fp16: bool = True) -> InferenceBackend:
    """``name``: "auto" (TensorRT if it imports and the engine builds, else ONNX Runtime),
    "tensorrt" (error if unavailable) or "onnxruntime"."""
    name = (name or "auto").lower()
    if name not in ("auto", "tensorrt", "onnxruntime"):
        raise ValueError(f"unknown backend {name!r} (auto, tensorrt, onnxruntime)")
    if name in ("auto", "tensorrt"):
        try:
            return TensorRTBackend(onnx_path, trt_cache_dir, fp16)
        except Exception as e:  # BackendUnavailable, build or CUDA errors
            if name == "tensorrt":
                raise BackendUnavailable(f"tensorrt backend unavailable: {e}") from e
            log.info("heatmap backend: TensorRT unavailable (%s); falling back to onnxruntime", e)
    return OnnxRuntimeBackend(onnx_path, intra_op_threads)
