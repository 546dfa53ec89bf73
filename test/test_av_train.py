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


def test_sim_finetune_targets_and_losses():
    """Box cells, mirroring, and the sim losses prefer a map peaked on the active talker."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from av_localization_ros.av.sim_finetune import box_cells, mirror_boxes, sim_losses
    act_b = np.array([[0.8, 0.2, 0.9, 0.5]], np.float32)
    ina_b = np.array([[0.1, 0.2, 0.2, 0.5]], np.float32)
    act, ina = box_cells(act_b), box_cells(ina_b)
    assert act.shape == (10, 10) and act[3, 8] == 1.0 and act[:, :8].sum() == 0
    assert np.allclose(box_cells(mirror_boxes(act_b)), act[:, ::-1])
    assert mirror_boxes(np.zeros((0, 4), np.float32)).shape == (0, 4)
    a = F.normalize(torch.randn(1, 8), dim=1)
    good = torch.zeros(1, 8, 10, 10) - a[:, :, None, None]
    good[:, :, 2:5, 8] = a[:, :, None]
    bad = torch.zeros(1, 8, 10, 10) - a[:, :, None, None]
    bad[:, :, 2:5, 1] = a[:, :, None]  # peak on the inactive talker
    A, Ina = torch.from_numpy(act)[None], torch.from_numpy(ina)[None]
    lg, sg = sim_losses(good, a, A, Ina, 0.03)
    lb, sb = sim_losses(bad, a, A, Ina, 0.03)
    assert lg < lb and sg < sb


def test_config_overrides_are_cast_to_the_field_types():
    """YAML 1.1 reads 3e-4 as a string; the override must still be a float (both CLIs)."""
    from av_localization_ros.av.sim_finetune import FTConfig
    cfg = T.TrainConfig.load(None, ["lr=3e-4", "epochs=2", "freeze_trunk=false", "out_dir=o/x"])
    assert cfg.lr == 3e-4 and isinstance(cfg.lr, float) and cfg.epochs == 2
    assert cfg.freeze_trunk is False and cfg.out_dir == "o/x"
    ft = T.config_from(FTConfig, {}, ["lr=5e-5", "steps=10", "out=o/y"])
    assert ft.lr == 5e-5 and ft.steps == 10 and ft.out == "o/y"
    with pytest.raises(ValueError, match="unknown config keys"):
        T.config_from(FTConfig, {}, ["nope=1"])
