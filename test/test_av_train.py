"""Training script smoke test: tiny run with every loss option, then resume."""
import pytest

torch = pytest.importorskip("torch")

from av_localization_ros.av import train as T  # noqa: E402


def test_losses_shapes():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(4, 8, 3, 3), dim=1)
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    loss, logits, maps = T.ezvsl_loss(v, a, 0.03)
    assert logits.shape == (4, 4) and maps.shape == (4, 4, 3, 3) and loss.item() > 0
    fns, tne = T.fnac_terms(v, a, logits, maps, 0.03)
    assert fns.item() >= 0 and tne.item() > 0
    # a perfectly matched batch (one position = own audio) has a lower loss
    v2 = torch.zeros(4, 4, 3, 3)
    for i in range(4):
        v2[i, i, 1, 1] = 1.0
        v2[i, (i + 1) % 4] = 1.0 - v2[i, i]
    v2 = torch.nn.functional.normalize(v2, dim=1)
    good, _, _ = T.ezvsl_loss(v2, torch.eye(4), 0.03)
    assert good.item() < loss.item()


def test_tiny_run_and_resume(tmp_path, capsys):
    overrides = [f"out_dir={tmp_path}", "n_train=32", "epochs=1", "batch_size=16",
                 "model={input_size: [64, 64]}", "fnac_weight=0.1", "fnac_tne_weight=0.1",
                 "momentum=0.9", "image_dropout=0.1", "threads=1"]
    cfg = T.TrainConfig.load(None, overrides)
    ck = T.train(cfg)
    assert ck.exists() and torch.load(ck, weights_only=False)["epoch"] == 0
    cfg2 = T.TrainConfig.load(None, overrides[:2] + ["epochs=2"] + overrides[3:])
    T.train(cfg2)
    assert "resumed" in capsys.readouterr().out
    assert torch.load(ck, weights_only=False)["epoch"] == 1
    m = T.load_checkpoint(ck)
    assert m.cfg.input_size == (64, 64)
    with pytest.raises(ValueError, match="unknown config keys"):
        T.TrainConfig.load(None, ["nope=1"])
