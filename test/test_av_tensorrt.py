"""TensorRT engine cache key (no TensorRT needed) and the TensorRT backend (skipped here)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "trt_build" / "build_engines.py"
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def load_build_engines():
    spec = importlib.util.spec_from_file_location("build_engines_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_engine_cache_key_changes_with_inputs():
    be = load_build_engines()
    k = be.engine_cache_key(b"onnx-bytes", "10.3.0", "8.7", be.precision_flags(True))
    assert k == be.engine_cache_key(b"onnx-bytes", "10.3.0", "8.7", ("fp16",))
    assert k != be.engine_cache_key(b"onnx-bytez", "10.3.0", "8.7", ("fp16",))  # ONNX bytes
    assert k != be.engine_cache_key(b"onnx-bytes", "10.3.0", "8.7", be.precision_flags(False))
    assert k != be.engine_cache_key(b"onnx-bytes", "10.4.0", "8.7", ("fp16",))  # TRT version
    assert k != be.engine_cache_key(b"onnx-bytes", "10.3.0", "8.9", ("fp16",))  # GPU
    p = be.engine_path("models/image_encoder.onnx", "/tmp/c", k)
    assert p.name == f"image_encoder.{k}.engine"


def test_build_script_reports_missing_tensorrt(tmp_path, capsys):
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here")
    be = load_build_engines()
    assert be.main(["--model-dir", str(tmp_path), "--cache", str(tmp_path / "c")]) == 2
    assert "tensorrt not installed" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt not installed")
def test_tensorrt_backend_matches_onnxruntime():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from av_localization_ros.av.backends import OnnxRuntimeBackend, TensorRTBackend
    from av_localization_ros.av.runtime import default_model_dir
    onnx_path = default_model_dir() / "image_encoder.onnx"
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 160, 160)).astype(np.float32)
    a = OnnxRuntimeBackend(onnx_path).run({"image": x})["features"]
    b = TensorRTBackend(onnx_path, fp16=True).run({"image": x})["features"]
    assert np.abs(a - b).max() < 5e-2  # FP16 engine


@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt not installed")
def test_heatmap_runner_on_tensorrt():
    from av_localization_ros.av.runtime import HeatmapRunner
    r = HeatmapRunner(backend="tensorrt")
    assert r.backend_name == "tensorrt"
