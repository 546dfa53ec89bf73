"""EZ-VSL / SLAVC metric re-implementation against hand-computed cases."""
import numpy as np
import pytest

from av_localization_ros.av import metrics as M

N = M.EVAL_SIZE


def half_map():
    m = np.zeros((N, N))
    m[:, :112] = 1.0
    return m


def test_ciou_perfect_and_half():
    pred = half_map()
    thr = M.median_threshold(M.normalize_map(pred))
    assert thr == 1.0  # sorted[int(0.5 * n)] of half zeros / half ones
    assert M.ciou(pred, M.gt_map([(0, 0, 112, 224)]), thr) == pytest.approx(1.0)
    # gt = left quarter: intersection 56*224, plus 56*224 predicted outside the box -> 0.5
    assert M.ciou(pred, M.gt_map([(0, 0, 56, 224)]), thr) == pytest.approx(0.5)
    assert M.localisation_ciou(pred, M.gt_map([(112, 0, 224, 224)])) == 0.0


def test_flickr_consensus_gt():
    g = M.flickr_gt_map([(0, 0, 112, 224), (0, 0, 56, 224)])
    assert g[0, 0] == 1.0 and g[0, 80] == 0.5 and g[0, 200] == 0.0
    assert M.flickr_gt_map([(0, 0, 10, 10)] * 3).max() == 1.0  # 3/2 clipped to 1
    # soft gt: sum(infer*gt) = 56*224*(1 + 0.5) = sum(gt), nothing outside -> 1
    assert M.localisation_ciou(half_map(), g) == pytest.approx(1.0)
    vg = M.gt_map([(0, 0, 112, 224), (0, 0, 56, 224)], "vggss")
    assert set(np.unique(vg)) == {0.0, 1.0}


def test_constant_map_selects_everything():
    g = M.gt_map([(0, 0, 112, 112)])
    assert M.localisation_ciou(np.full((7, 7), 0.3), g) == pytest.approx(0.25)


def test_auc_and_ap50():
    cious = [1.0, 0.5, 0.0]
    assert M.ap50(cious) == pytest.approx(2 / 3)
    # t=0: 1; t in (0, .5]: 2/3; t in (.5, 1]: 1/3 -> trapezoids
    expected = (1 + 2 / 3) / 2 * 0.05 + 9 * (2 / 3) * 0.05 + (2 / 3 + 1 / 3) / 2 * 0.05 + 9 * (1 / 3) * 0.05
    assert M.auc_from_cious(cious) == pytest.approx(expected)
    assert M.auc_from_cious([1.0] * 4) == pytest.approx(1.0)


def test_slavc_ap_and_f1():
    has_box = [True, True, False, True]
    cious = [0.8, 0.6, 0.0, 0.2]
    conf = [0.9, 0.7, 0.8, 0.1]
    # sweep thresholds 0.8, 0.7, 0.1 -> P = [1/2, 2/3, 1/2], R = [1/3, 2/3, 1]
    # interpolated P = [2/3, 2/3, 1/2]; AP = 2/3 * 1/3 + 2/3 * 1/3
    assert M.precision_recall(has_box, cious, conf, 0.8) == pytest.approx((0.5, 1 / 3))
    assert M.precision_recall(has_box, cious, conf, 0.1) == pytest.approx((0.5, 1.0))
    assert M.silent_ap(has_box, cious, conf) == pytest.approx(4 / 9)
    assert M.max_f1(has_box, cious, conf) == pytest.approx(2 / 3)


def test_slavc_confidence():
    assert M.slavc_confidence(np.array([-1.0, 0.0, 0.5, 1.0])) == pytest.approx(1.0)
    assert M.slavc_confidence(np.array([-1, -1, -1, -1, -1, -1, 0.0, 1.0])) == pytest.approx(0.75)


def test_upsample_matches_align_corners():
    torch = pytest.importorskip("torch")
    m = np.array([[0.0, 1.0], [2.0, 3.0]])
    np.testing.assert_allclose(M.upsample_map(m, 3), [[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]])
    r = np.random.default_rng(0).normal(size=(10, 10))
    ref = torch.nn.functional.interpolate(torch.tensor(r)[None, None], size=(N, N),
                                          mode="bilinear", align_corners=True)[0, 0].numpy()
    np.testing.assert_allclose(M.upsample_map(r), ref, atol=1e-9)


def test_evaluator_summary_with_silent_pairs():
    ev = M.Evaluator()
    ev.add(half_map(), [[0, 0, 0.5, 1.0]], 0.9)
    ev.add(half_map(), [[0.5, 0, 1.0, 1.0]], 0.8)
    ev.add(half_map(), np.zeros((0, 4)), 0.1)
    s = ev.summary()
    assert s["n"] == 3 and s["n_visible"] == 2
    assert s["ciou_ap50"] == 0.5
    assert "silent_ap50" in s and "silent_max_f1" in s


def test_pointing_game():
    g = M.gt_map([(0, 0, 56, 56)])
    m = np.zeros((10, 10))
    m[0, 0] = 1.0
    assert M.pointing_hit(m, g)
    m[0, 0], m[9, 9] = 0.0, 1.0
    assert not M.pointing_hit(m, g)
