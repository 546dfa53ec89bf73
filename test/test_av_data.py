"""Synthetic AV dataset and the VGG-SS / Flickr-SoundNet folder loaders (fake trees)."""
import json

import numpy as np
import pytest

from av_localization_ros.av import data as D
from av_localization_ros.av import metrics as M
from av_localization_ros.av.audio_features import N_FRAMES, N_MELS, log_mel


def test_synthetic_deterministic_and_well_formed():
    ds = D.SyntheticAV(n_samples=12, image_size=96, p_silent=0.2, p_offscreen=0.2)
    a, b = ds[3], ds[3]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["audio"], b["audio"])
    kinds = set()
    for i in range(len(ds)):
        s = ds[i]
        kinds.add(s["kind"])
        assert s["image"].shape == (96, 96, 3) and s["image"].dtype == np.uint8
        assert s["audio"].dtype == np.float32 and s["audio"].size == 16000
        assert s["boxes"].shape == (len(s["labels"]), 4)
        assert np.all((s["boxes"] >= 0) & (s["boxes"] <= 1))
        if s["kind"] == "sounding":
            assert 1 <= len(s["labels"]) <= 3 and len(set(s["labels"].tolist())) == len(s["labels"])
        else:
            assert len(s["labels"]) == 0 and len(s["all_labels"]) >= 1
        assert log_mel(s["audio"]).shape == (N_MELS, N_FRAMES)
    assert "sounding" in kinds
    with pytest.raises(IndexError):
        ds[12]


def test_heldout_split_differs():
    tr = D.SyntheticAV(n_samples=4, image_size=64, split="train")[0]
    ho = D.SyntheticAV(n_samples=4, image_size=64, split="heldout")[0]
    assert not np.array_equal(tr["image"], ho["image"])
    with pytest.raises(ValueError):
        D.SyntheticAV(n_samples=1, split="test")


def test_sound_families_are_distinct():
    rng = np.random.default_rng(0)
    cents = []
    for c in range(D.N_CATEGORIES):
        m = log_mel(D.synth_sound(c, rng)).mean(axis=1)
        cents.append(m / np.linalg.norm(m))
    sim = np.array(cents) @ np.array(cents).T
    assert np.all(sim[~np.eye(D.N_CATEGORIES, dtype=bool)] < 0.999)


def _fake_tree(root, ids):
    cv2 = pytest.importorskip("cv2")
    sf = pytest.importorskip("soundfile")
    (root / "frames").mkdir(parents=True)
    (root / "audio").mkdir()
    for i in ids:
        cv2.imwrite(str(root / "frames" / f"{i}.jpg"), np.full((32, 48, 3), 128, np.uint8))
        sf.write(str(root / "audio" / f"{i}.wav"), np.zeros((8000 * 3, 2), np.float32), 8000)


def test_vggss_loader(tmp_path):
    _fake_tree(tmp_path, ["a", "b", "c"])
    (tmp_path / "vggss.json").write_text(json.dumps([
        {"file": "a", "bbox": [[0.1, 0.2, 0.5, 0.9]]},
        {"file": "b", "bbox": [[0.0, 0.0, 1.2, 0.5], [0.5, 0.5, 1.0, 1.0]]}]))
    ds = D.VggSoundSourceDataset(tmp_path)
    assert ds.ids == ["a", "b"]  # c has no annotation
    s = ds[1]
    assert s["image"].shape == (32, 48, 3)
    assert s["audio"].size == 16000  # centre 1 s of 3 s, resampled 8k -> 16k, mono
    np.testing.assert_allclose(s["boxes"][0], [0, 0, 1, 0.5])  # clipped
    assert s["gt_format"] == "vggss"


def test_flickr_loader_and_consensus(tmp_path):
    _fake_tree(tmp_path, ["x1"])
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x1.xml").write_text(
        "<annotation><object><bbox><xmin>0</xmin><ymin>0</ymin><xmax>128</xmax><ymax>256</ymax>"
        "</bbox></object><object><bbox><xmin>0</xmin><ymin>0</ymin><xmax>64</xmax>"
        "<ymax>256</ymax></bbox></object></annotation>")
    ds = D.FlickrSoundNetDataset(tmp_path)
    s = ds[0]
    np.testing.assert_allclose(s["boxes"], [[0, 0, 0.5, 1], [0, 0, 0.25, 1]])
    g = M.flickr_gt_map(M.boxes_to_pixels(s["boxes"]))
    assert g[10, 10] == 1.0 and g[10, 100] == 0.5 and g[10, 200] == 0.0
    with pytest.raises(FileNotFoundError):
        D.FlickrSoundNetDataset(tmp_path / "nope")


def test_sim_scene_adapter():
    scene = pytest.importorskip("av_localization_ros.sim.scene")
    cfg = scene.SceneConfig(
        talkers=[scene.TalkerConfig(waypoints=[(0, 2.0, 0.3, 0.3)], speaking=[(0.5, 2.5)]),
                 scene.TalkerConfig(waypoints=[(0, 2.0, 0.0, 0.3)], speaking=[(2.6, 3.0)])],
        duration_s=3.0, fps=2, rt60_s=0.0, seed=1)
    ds = D.SimSceneAV([cfg])
    assert len(ds) == 6
    kinds = [ds[i]["kind"] for i in range(len(ds))]
    assert kinds[0] == "silent" and "sounding" in kinds
    s = ds[kinds.index("sounding")]
    assert s["audio"].size == 16000 and s["image"].ndim == 3
    assert s["boxes"].shape[1] == 4 and np.all(s["labels"] == D.CATEGORIES.index("talker"))
    assert np.all((s["boxes"] >= 0) & (s["boxes"] <= 1))
