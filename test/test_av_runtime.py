"""HeatmapRunner on the shipped models: interface, backend selection, bad inputs."""
import json
import logging
import shutil

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from av_localization_ros.av import backends  # noqa: E402
from av_localization_ros.av.runtime import (HeatmapRunner, ImageInputError,  # noqa: E402
                                            ModelMismatchError, default_model_dir)
from av_localization_ros.core.types import AudioWindow  # noqa: E402

MODELS = default_model_dir()
pytestmark = pytest.mark.skipif(not (MODELS / "av_model.json").exists(),
                                reason="no shipped model in models/")


@pytest.fixture(scope="module")
def runner():
    return HeatmapRunner(backend="onnxruntime")


def tone_window(stamp_ns=0, rate=48000, channels=4, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    x = 0.1 * np.sin(2 * np.pi * 300 * t).astype(np.float32)
    return AudioWindow(np.tile(x, (channels, 1)), stamp_ns, rate)


def test_interface(runner):
    assert runner.input_size == (160, 160)
    assert runner.audio_window_s == pytest.approx(1.0)
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    heat, conf = runner.infer(img)  # works before any audio: zeros
    assert heat.shape == (480, 640) and conf == 0.0
    runner.set_audio(tone_window())
    heat, conf = runner.infer(img)
    assert heat.shape == (480, 640) and heat.dtype == np.float32
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert isinstance(conf, float) and 0.0 <= conf <= 1.0


def test_audio_embedding_cached_at_rate():
    r = HeatmapRunner(backend="onnxruntime", audio_rate_hz=5.0)
    calls = []
    orig = r.audio_backend.run
    r.audio_backend.run = lambda x: calls.append(1) or orig(x)
    r.set_audio(tone_window(0))
    r.set_audio(tone_window(100_000_000))  # +0.1 s < 0.2 s: cached
    assert len(calls) == 1
    r.set_audio(tone_window(200_000_000))  # +0.2 s: recomputed
    assert len(calls) == 2
    r.set_audio(tone_window(0))  # stamp went backwards (replay restart): recomputed
    assert len(calls) == 3


def test_auto_backend_falls_back_with_reason(caplog, monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_available", lambda: (False, "tensorrt not installed"))
    with caplog.at_level(logging.INFO, logger="av_localization_ros.av.backends"):
        r = HeatmapRunner(backend="auto")
    assert r.backend_name == "onnxruntime"
    assert "tensorrt not installed" in caplog.text and "falling back" in caplog.text
    with pytest.raises(backends.BackendUnavailable, match="tensorrt not installed"):
        backends.select_backend("tensorrt", MODELS / "image_encoder.onnx")
    with pytest.raises(ValueError):
        backends.select_backend("openvino", MODELS / "image_encoder.onnx")


def test_ort_backend_satisfies_protocol():
    b = backends.select_backend("onnxruntime", MODELS / "audio_encoder.onnx", intra_op_threads=1)
    assert isinstance(b, backends.InferenceBackend)
    assert [s.name for s in b.inputs] == ["log_mel"] and [s.name for s in b.outputs] == ["embedding"]


@pytest.mark.parametrize("bad", [
    np.zeros((480, 640), np.uint8),  # grayscale
    np.zeros((480, 640, 1), np.uint8),  # mono8 with a channel axis
    np.zeros((480, 640, 4), np.uint8),  # bgra8
    np.zeros((480, 640, 3), np.float32),  # 32FC3
    np.zeros((480, 640, 3), np.uint16),  # 16UC3
    np.zeros((0, 640, 3), np.uint8),  # empty
    np.zeros((4, 4, 3), np.uint8),  # too small
    "not an image",
])
def test_bad_images(runner, bad):
    with pytest.raises(ImageInputError):
        runner.infer(bad)
    assert issubclass(ImageInputError, ValueError)


def test_zero_length_audio(runner):
    with pytest.raises(ValueError, match="zero-length"):
        runner.set_audio(AudioWindow(np.zeros((4, 0), np.float32), 0, 48000))


@pytest.mark.parametrize("change, message", [
    (("calibration", "cos_lo", float("nan")), "calibration"),  # heatmaps would be all NaN
    (("calibration", "cos_lo", 0.9), "calibration"),  # inverted window: all zero
    (("calibration", "conf_hi", None), "metadata"),
    (("audio", "window_s", 0.0), "window_s"),  # samples[:, -0:] is the whole window
    (("audio", "n_mels", 40), "audio features"),
    (("audio", "sample_rate", 48000), "audio features"),
])
def test_unusable_metadata_values_are_rejected(tmp_path, change, message):
    d = tmp_path / "m"
    shutil.copytree(MODELS, d)
    meta = json.loads((d / "av_model.json").read_text())
    section, key, value = change
    meta[section][key] = value
    (d / "av_model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match=message):
        HeatmapRunner(d, backend="onnxruntime")


def test_audio_shorter_than_half_the_model_window_is_refused(runner):
    with pytest.raises(ValueError, match="audio window"):
        runner.set_audio(AudioWindow(np.zeros((4, 4096), np.float32), 0, 16000))  # 0.256 s


def test_mismatched_model(tmp_path):
    torch = pytest.importorskip("torch")
    from av_localization_ros.av.export import export
    from av_localization_ros.av.model import AVModel, ModelConfig
    # an image encoder exported for 64x64 next to metadata that promises 160x160
    export(AVModel(ModelConfig(input_size=(64, 64), pretrained=False)).eval(), tmp_path)
    meta = json.loads((MODELS / "av_model.json").read_text())
    (tmp_path / "av_model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="sha256"):  # not the graphs it describes
        HeatmapRunner(tmp_path, backend="onnxruntime")
    meta.pop("sha256")  # without hashes the graph itself is checked against the metadata
    (tmp_path / "av_model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelMismatchError, match="shape"):
        HeatmapRunner(tmp_path, backend="onnxruntime")
    # a graph with renamed tensors
    d2 = tmp_path / "renamed"
    shutil.copytree(MODELS, d2)
    shutil.copy(tmp_path / "image_encoder.onnx", d2 / "audio_encoder.onnx")
    with pytest.raises(ModelMismatchError):
        HeatmapRunner(d2, backend="onnxruntime")
    # malformed metadata
    (d2 / "av_model.json").write_text("{}")
    with pytest.raises(ModelMismatchError, match="metadata"):
        HeatmapRunner(d2, backend="onnxruntime")
    assert issubclass(ModelMismatchError, ValueError)
    del torch
