"""TensorRT engine cache key and input checks (no TensorRT needed), the build script's
command line, and the TensorRT backend itself (skipped without TensorRT and a GPU)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from av_localization_ros.av import engine_build as eb
from av_localization_ros.av.backends import TensorSpec, check_input

SCRIPT = Path(__file__).resolve().parents[1] / "trt_build" / "build_engines.py"
HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


def load_build_script():
    spec = importlib.util.spec_from_file_location("build_engines_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_engine_cache_key_changes_with_inputs():
    def key(onnx=b"onnx-bytes", trt="10.3.0", gpu="NVIDIA GeForce RTX 3090", cc="8.6",
            flags=("fp16",)):
        return eb.engine_cache_key(onnx, trt, gpu, cc, flags)

    k = key()
    assert k == key(flags=eb.precision_flags(True))
    assert k != key(onnx=b"onnx-bytez")  # another model
    assert k != key(flags=eb.precision_flags(False))  # another precision
    assert k != key(trt="10.4.0")  # another TensorRT
    assert k != key(cc="8.9")  # another architecture
    assert k != key(gpu="NVIDIA RTX A6000")  # same compute capability (8.6), another GPU model
    p = eb.engine_path("models/image_encoder.onnx", "/tmp/c", k)
    assert p.name == f"image_encoder.{k}.engine"


def test_default_engine_cache_is_per_user_or_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(eb.CACHE_ENV, raising=False)
    assert eb.default_cache_dir() == Path.home() / ".cache" / "av_localization_ros" / "trt_engines"
    monkeypatch.setenv(eb.CACHE_ENV, str(tmp_path))
    assert eb.default_cache_dir() == tmp_path


def test_engine_inputs_are_checked_not_broadcast():
    """torch's copy_ into the engine's buffer would broadcast (1, 3, 1, 160) and cast float64:
    the backend refuses what ONNX Runtime refuses."""
    spec = TensorSpec("image", (1, 3, 160, 160), "float32")
    check_input(spec, np.zeros((1, 3, 160, 160), np.float32))
    for bad in (np.zeros((1, 3, 1, 160), np.float32), np.zeros((1, 3, 160, 160)),
                np.zeros((3, 160, 160), np.float32), None):
        with pytest.raises(ValueError, match="image"):
            check_input(spec, bad)
    check_input(TensorSpec("audio", ("batch", 64, 101), "float32"), np.zeros((2, 64, 101), np.float32))


def test_build_script_reports_missing_tensorrt(tmp_path, capsys):
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here")
    script = load_build_script()
    assert script.main(["--model-dir", str(tmp_path), "--cache", str(tmp_path / "c")]) == 2
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
