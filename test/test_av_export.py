"""ONNX export: checker, opset, TensorRT op allow-list, torch vs ONNX Runtime parity."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from av_localization_ros.av import export as E  # noqa: E402
from av_localization_ros.av.audio_features import log_mel  # noqa: E402
from av_localization_ros.av.backends import OnnxRuntimeBackend  # noqa: E402
from av_localization_ros.av.model import AVModel, ModelConfig  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = AVModel(ModelConfig(input_size=(160, 160), pretrained=True)).eval()
    out = tmp_path_factory.mktemp("onnx")
    meta = E.export(model, out)
    return model, out, meta


def test_checker_opset_and_allow_list(exported):
    _, out, meta = exported
    for f in (E.IMAGE_ONNX, E.AUDIO_ONNX):
        m = onnx.load(str(out / f))
        onnx.checker.check_model(m, full_check=True)
        assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {E.OPSET}
        assert E.graph_ops(out / f) <= E.ALLOWED_OPS
        for t in list(m.graph.input) + list(m.graph.output):  # static shapes only
            assert all(d.HasField("dim_value") for d in t.type.tensor_type.shape.dim)
        assert meta["sha256"][f] == E.sha256_file(out / f)
    assert meta["image"]["output_shape"] == [1, 128, 10, 10]


def test_allow_list_rejects_other_ops(tmp_path):
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Erf", ["x"], ["y"])], "g", [x], [y])
    p = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(p))
    with pytest.raises(ValueError, match="allow-list"):
        E.check_onnx(p)


def test_torch_onnxruntime_parity(exported):
    model, out, _ = exported
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1, 3, 160, 160)).astype(np.float32)
    t = np.arange(16000) / 16000.0
    mel = log_mel((0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))[None, None]
    ib = OnnxRuntimeBackend(out / E.IMAGE_ONNX)
    ab = OnnxRuntimeBackend(out / E.AUDIO_ONNX)
    f_ort = ib.run({E.IMAGE_INPUT: img})[E.IMAGE_OUTPUT][0]
    a_ort = ab.run({E.AUDIO_INPUT: mel})[E.AUDIO_OUTPUT][0]
    with torch.no_grad():
        s_t, v_t, a_t = model(torch.from_numpy(img), torch.from_numpy(mel))
    map_ort = np.einsum("chw,c->hw", f_ort, a_ort)
    map_torch = (s_t[0] * model.tau).numpy()
    assert np.abs(map_ort - map_torch).max() < 1e-3
    assert np.abs(f_ort - v_t[0].numpy()).max() < 1e-3
    assert not model.training and not model.image_encoder.training  # export left it in eval


def test_resnet18_variant_exports_within_allow_list(tmp_path):
    from av_localization_ros.av.model import ResNet18Encoder, load_resnet18_weights
    torch.manual_seed(0)
    model = AVModel(ModelConfig(backbone="resnet18", stride=32, input_size=(64, 64))).eval()
    s, v, a = model(torch.rand(2, 3, 64, 64) * 255, torch.randn(2, 1, 64, 96))
    assert v.shape == (2, 128, 2, 2) and s.shape == (2, 2, 2)
    meta = E.export(model, tmp_path)
    assert meta["image"]["output_shape"] == [1, 128, 2, 2]
    # user weights in torchvision key layout load (fc ignored, proj kept)
    enc = ResNet18Encoder()
    sd = {k: torch.full_like(t, 0.5) for k, t in enc.state_dict().items() if not k.startswith("proj")}
    sd["fc.weight"] = torch.zeros(1000, 512)
    torch.save(sd, tmp_path / "r18.pth")
    load_resnet18_weights(enc, str(tmp_path / "r18.pth"))
    assert float(enc.conv1.weight.mean()) == 0.5
