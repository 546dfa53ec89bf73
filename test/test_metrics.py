"""Hand-computed checks of evaluation/metrics.py and smoke tests of evaluation/plots.py.

Every expected number below is worked out by hand in the comments; nothing is compared
against the implementation's own output.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

try:
    import av_localization_ros  # noqa: F401
except ImportError:  # running pytest without the package installed / repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from av_localization_ros.core.types import DoaPeak, TrackState  # noqa: E402
from av_localization_ros.evaluation.ground_truth import (  # noqa: E402
    GroundTruthSample,
    SpeakerTruth,
)
from av_localization_ros.evaluation.metrics import (  # noqa: E402
    FrameEstimate,
    doa_accuracy,
    evaluate,
    locata_metrics,
    match_truth,
    mot_metrics,
    ospa,
)

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # realistic absolute stamps


# ---------------------------------------------------------------------------- builders

def ns(t_s: float) -> int:
    return T0 + int(round(t_s * NS))


def spk(sid, az_deg, active=True, el_deg=0.0, box=None):
    return SpeakerTruth(speaker_id=sid, azimuth=math.radians(az_deg),
                        elevation=math.radians(el_deg), active=active, box=box)


def gt(t_s, *speakers):
    return GroundTruthSample(stamp_ns=ns(t_s), speakers=tuple(speakers))


def peak(az_deg, conf=1.0, el_deg=0.0):
    return DoaPeak(azimuth=math.radians(az_deg), elevation=math.radians(el_deg),
                   confidence=conf)


def track(tid, az_deg, speaking=True, el_deg=0.0):
    return TrackState(track_id=tid, azimuth=math.radians(az_deg),
                      elevation=math.radians(el_deg), azimuth_rate=0.0, elevation_rate=0.0,
                      covariance=np.eye(4) * 1e-3, confidence=0.9, speaking=speaking,
                      age_s=1.0)


def est(t_s, peaks=(), tracks=(), voice=True):
    return FrameEstimate(stamp_ns=ns(t_s), peaks=tuple(peaks), tracks=tuple(tracks),
                         voice_active=voice)


# Two speakers, both active for 10 frames at 0.1 s: A (id 1) at +30 deg, B (id 2) at -60 deg.
def two_speaker_truth(n=10):
    return [gt(0.1 * k, spk(1, 30.0), spk(2, -60.0)) for k in range(n)]


# ---------------------------------------------------------------------------- perfect

def test_perfect_estimates():
    truth = two_speaker_truth()
    ests = [est(0.1 * k, peaks=[peak(30.0), peak(-60.0)],
                tracks=[track(11, 30.0), track(12, -60.0)]) for k in range(10)]
    r = evaluate(ests, truth)
    # every source-frame is hit exactly: 10 frames x 2 sources = 20 source-frames
    assert r["doa"]["azimuth_mae_deg"] == pytest.approx(0.0, abs=1e-9)
    assert r["doa"]["elevation_mae_deg"] == pytest.approx(0.0, abs=1e-9)
    assert r["doa"]["acc_at_10"] == 1.0
    assert r["doa"]["miss_rate"] == 0.0
    assert r["doa"]["n_frames"] == 10 and r["doa"]["n_source_frames"] == 20
    loc = r["locata"]
    assert loc["pd"] == 1.0
    assert loc["ospa_deg"] == pytest.approx(0.0, abs=1e-9)
    assert loc["azimuth_mae_deg"] == pytest.approx(0.0, abs=1e-9)
    assert loc["track_swaps"] == 0 and loc["fragmentations"] == 0
    assert loc["false_track_rate"] == 0.0
    # both sources are tracked on their onset frame -> latency 0, 2 onsets both detected
    assert loc["track_latency_s"] == pytest.approx(0.0, abs=1e-12)
    assert loc["n_onsets"] == 2 and loc["n_onsets_detected"] == 2
    mot = r["mot"]
    assert mot["mota"] == 1.0 and mot["idf1"] == 1.0
    assert mot["motp"] == pytest.approx(0.0, abs=1e-9)
    assert mot["num_switches"] == 0 and mot["num_false_positives"] == 0
    assert mot["num_misses"] == 0 and mot["num_objects"] == 20
    assert r["vad"]["accuracy"] == 1.0


# ---------------------------------------------------------------------------- DoA accuracy

def test_constant_bias_5_deg():
    truth = two_speaker_truth()
    # every peak 5 deg CCW of its source: |error| = 5 on all 20 source-frames
    ests = [est(0.1 * k, peaks=[peak(35.0), peak(-55.0)],
                tracks=[track(1, 35.0), track(2, -55.0)]) for k in range(10)]
    r = doa_accuracy(ests, truth)
    assert r["azimuth_mae_deg"] == pytest.approx(5.0)
    assert r["acc_at_10"] == 1.0  # 5 <= 10 everywhere
    # with a 4-deg threshold nothing passes (5 > 4); the key follows the threshold
    r4 = doa_accuracy(ests, truth, threshold_deg=4.0)
    assert r4["acc_at_4"] == 0.0 and "acc_at_10" not in r4
    assert doa_accuracy(ests, truth, threshold_deg=7.5)["acc_at_7.5"] == 1.0
    # tracks also 5 deg off: LOCATA MAE 5; OSPA (p=1) per frame = (5 + 5) / 2 = 5
    loc = locata_metrics(ests, truth)
    assert loc["azimuth_mae_deg"] == pytest.approx(5.0)
    assert loc["ospa_deg"] == pytest.approx(5.0)
    # MOTP = mean matched distance = 5 deg
    assert mot_metrics(ests, truth)["motp"] == pytest.approx(5.0)


def test_azimuth_wrap_around():
    # source at 179 deg, peak at -179 deg: the short way round is 2 deg, not 358
    truth = [gt(0.0, spk(1, 179.0))]
    ests = [est(0.0, peaks=[peak(-179.0)], tracks=[track(1, -179.0)])]
    r = doa_accuracy(ests, truth)
    assert r["azimuth_mae_deg"] == pytest.approx(2.0)
    assert r["acc_at_10"] == 1.0
    # great-circle with both elevations 0 is the same 2 deg
    r3 = doa_accuracy(ests, truth, azimuth_only=False)
    assert r3["azimuth_mae_deg"] == pytest.approx(2.0)
    loc = locata_metrics(ests, truth)
    assert loc["pd"] == 1.0 and loc["azimuth_mae_deg"] == pytest.approx(2.0)
    assert loc["ospa_deg"] == pytest.approx(2.0)


def test_azimuth_only_ignores_elevation_in_matching():
    # sources at (az 0, el 40) and (az 60, el -30); peaks at (az 20, el 40) and (az 5, el -30)
    # azimuth-only: pairing {0<->5, 60<->20} costs 5 + 40 = 45 < {0<->20, 60<->5} = 20 + 55,
    #               so az errors 5 and 40 (MAE 22.5), el errors 70 and 70
    # great-circle: (0, 40)-(20, 40) ~ 15.3 deg and (60, -30)-(5, -30) ~ 47.5 deg beat the
    #               crossed pairing (> 70 deg each): az errors 20 and 55, el errors 0 and 0
    truth = [gt(0.0, spk(1, 0.0, el_deg=40.0), spk(2, 60.0, el_deg=-30.0))]
    ests = [est(0.0, peaks=[peak(20.0, el_deg=40.0), peak(5.0, el_deg=-30.0)])]
    a = doa_accuracy(ests, truth, azimuth_only=True)
    assert a["azimuth_mae_deg"] == pytest.approx(22.5)
    assert a["elevation_mae_deg"] == pytest.approx(70.0)
    g = doa_accuracy(ests, truth, azimuth_only=False)
    assert g["azimuth_mae_deg"] == pytest.approx(37.5)
    assert g["elevation_mae_deg"] == pytest.approx(0.0, abs=1e-9)


def test_only_the_n_most_confident_peaks_count():
    # one active source at 0 deg; peaks at 40 deg (conf 0.9) and 1 deg (conf 0.5): with one
    # source only the most confident peak counts, so the error is 40 (a miss for ACC@10), not 1
    truth = [gt(0.0, spk(1, 0.0))]
    ests = [est(0.0, peaks=[peak(1.0, conf=0.5), peak(40.0, conf=0.9)])]
    r = doa_accuracy(ests, truth)
    assert r["azimuth_mae_deg"] == pytest.approx(40.0)
    assert r["acc_at_10"] == 0.0 and r["miss_rate"] == 0.0
    # two active sources (0 and 45 deg): both peaks count, errors 1 and 5
    truth2 = [gt(0.0, spk(1, 0.0), spk(2, 45.0))]
    r2 = doa_accuracy(ests, truth2)
    assert r2["azimuth_mae_deg"] == pytest.approx(3.0)
    assert r2["acc_at_10"] == 1.0


def test_missed_source():
    # two sources (0 and 90 deg), one peak at 3 deg: Hungarian pairs 0<->3 (error 3),
    # source at 90 is missed. MAE over matched = 3; ACC = 1 hit / 2 source-frames = 0.5
    # (the miss counts as 180 > 10); miss_rate = 1/2.
    truth = [gt(0.0, spk(1, 0.0), spk(2, 90.0))]
    ests = [est(0.0, peaks=[peak(3.0)])]
    r = doa_accuracy(ests, truth)
    assert r["azimuth_mae_deg"] == pytest.approx(3.0)
    assert r["acc_at_10"] == pytest.approx(0.5)
    assert r["miss_rate"] == pytest.approx(0.5)
    assert r["n_source_frames"] == 2 and r["n_frames"] == 1


def test_inactive_truth_and_empty_frames_do_not_count():
    # frame 0: speaker 1 active at 0 deg, speaker 2 INACTIVE at 90 deg; peak at 0 -> error 0.
    # frame 1: nobody active -> not a DoA frame at all, whatever the peaks say.
    truth = [gt(0.0, spk(1, 0.0), spk(2, 90.0, active=False)),
             gt(0.1, spk(1, 0.0, active=False), spk(2, 90.0, active=False))]
    ests = [est(0.0, peaks=[peak(0.0)]), est(0.1, peaks=[peak(-120.0)])]
    r = doa_accuracy(ests, truth)
    assert r["n_frames"] == 1 and r["n_source_frames"] == 1
    assert r["miss_rate"] == 0.0 and r["acc_at_10"] == 1.0


def test_truth_matching_tolerance_and_skips():
    # GT every 0.1 s for t = 0..0.5; estimates at t = 0.02, 0.12, ..., 0.92 (20 ms late).
    # Nearest GT for t <= 0.52 is 20 ms away (kept: 6 frames); t = 0.62 is 120 ms from 0.5
    # (> 60 ms) -> skipped, as are 0.72, 0.82, 0.92: 4 skipped.
    truth = [gt(0.1 * k, spk(1, 10.0)) for k in range(6)]
    ests = [est(0.1 * k + 0.02, peaks=[peak(10.0)]) for k in range(10)]
    pairs, skipped = match_truth(ests, truth)
    assert len(pairs) == 6 and skipped == 4
    assert all(abs(e.stamp_ns - g.stamp_ns) == 20_000_000 for e, g in pairs)
    r = doa_accuracy(ests, truth)
    assert r["n_frames"] == 6 and r["n_skipped_frames"] == 4
    # a 10 ms tolerance keeps nothing
    assert doa_accuracy(ests, truth, tolerance_s=0.01)["n_skipped_frames"] == 10


def test_truth_samples_sharing_a_stamp_resolve_to_the_last_one():
    """A regular sample and an extra one at a talk start on the same stamp: every estimate
    near that stamp sees the last one given, whichever side of the stamp it lies on."""
    truth = [gt(0.0), gt(0.1), gt(0.1, spk(1, 10.0)), gt(0.2, spk(1, 10.0))]
    pairs, _ = match_truth([est(0.06), est(0.14)], truth)
    assert [len(g.speakers) for _, g in pairs] == [1, 1]


# ---------------------------------------------------------------------------- OSPA

def test_ospa_by_hand():
    c = 30.0
    # both empty -> 0; one empty -> c (all cardinality error)
    assert ospa(np.zeros((0, 0)), c, 1) == 0.0
    assert ospa(np.zeros((1, 0)), c, 1) == c
    assert ospa(np.zeros((0, 3)), c, 2) == c
    # 1 GT vs 2 estimates at distances 10 and 100: best pairing uses 10, the extra estimate
    # costs c: p=1 -> (10 + 30) / 2 = 20
    d = np.array([[10.0, 100.0]])
    assert ospa(d, c, 1) == pytest.approx(20.0)
    # p=2 -> sqrt((10^2 + 30^2) / 2) = sqrt(500) = 22.3607
    assert ospa(d, c, 2) == pytest.approx(math.sqrt(500.0))
    # orientation does not matter
    assert ospa(d.T, c, 1) == pytest.approx(20.0)
    # 2 vs 2 with the distances cut off at c: pairs (0,1)=5 and (1,0)=50->30 beat the
    # diagonal 40->30 + 40->30: p=1 -> (5 + 30) / 2 = 17.5
    assert ospa(np.array([[40.0, 5.0], [50.0, 40.0]]), c, 1) == pytest.approx(17.5)


def test_locata_ospa_one_truth_two_tracks():
    # source at 0 deg; speaking tracks at 10 and 100 deg (and a silent one, ignored by
    # default). OSPA = (10 + 30) / 2 = 20. Gate 30: source <-> track 10 (error 10);
    # the 100-deg track is a false track: 1 per frame. Pd = 1.
    truth = [gt(0.0, spk(1, 0.0))]
    ests = [est(0.0, tracks=[track(1, 10.0), track(2, 100.0), track(3, -50.0, speaking=False)])]
    loc = locata_metrics(ests, truth)
    assert loc["ospa_deg"] == pytest.approx(20.0)
    assert loc["pd"] == 1.0
    assert loc["azimuth_mae_deg"] == pytest.approx(10.0)
    assert loc["false_track_rate"] == pytest.approx(1.0)
    # with all tracks: 1 GT vs 3 tracks -> (10 + 30 + 30) / 3 = 23.333; 2 false tracks
    loc_all = locata_metrics(ests, truth, use_all_tracks=True)
    assert loc_all["ospa_deg"] == pytest.approx(70.0 / 3.0)
    assert loc_all["false_track_rate"] == pytest.approx(2.0)


def test_locata_gate_turns_far_track_into_miss():
    # source at 0, only track at 45 deg (> 30 gate): Pd = 0, 1 false track, MAE undefined;
    # OSPA = min(45, 30) = 30
    truth = [gt(0.0, spk(1, 0.0))]
    ests = [est(0.0, tracks=[track(1, 45.0)])]
    loc = locata_metrics(ests, truth)
    assert loc["pd"] == 0.0
    assert loc["false_track_rate"] == 1.0
    assert math.isnan(loc["azimuth_mae_deg"])
    assert loc["ospa_deg"] == pytest.approx(30.0)


# ---------------------------------------------------------------------------- swaps

def test_track_swap_counted_once():
    # source 1 at 0 deg active for 6 frames; track 7 follows it on frames 0-2, then the
    # tracker re-initialises it as track 9 on frames 3-5: one identity change -> 1 swap.
    truth = [gt(0.1 * k, spk(1, 0.0)) for k in range(6)]
    ests = [est(0.1 * k, tracks=[track(7 if k < 3 else 9, 1.0)]) for k in range(6)]
    loc = locata_metrics(ests, truth)
    assert loc["track_swaps"] == 1
    assert loc["pd"] == 1.0 and loc["fragmentations"] == 0
    assert mot_metrics(ests, truth)["num_switches"] == 1


def test_gap_without_id_change_is_a_fragmentation_not_a_swap():
    # track 7 on frames 0,1; nothing on frame 2; track 7 again on 3,4:
    # swaps 0 (same ID at consecutive assignments), fragmentations 1, Pd = 4/5
    truth = [gt(0.1 * k, spk(1, 0.0)) for k in range(5)]
    ests = [est(0.1 * k, tracks=[] if k == 2 else [track(7, 0.0)]) for k in range(5)]
    loc = locata_metrics(ests, truth)
    assert loc["track_swaps"] == 0
    assert loc["fragmentations"] == 1
    assert loc["pd"] == pytest.approx(0.8)


def test_track_handover_between_two_talkers_and_its_idf1_counts():
    # talker 1 at 0 deg speaks on frames 0-3, talker 2 at 20 deg on frames 4-7 (1 silent then);
    # one track, ID 5, follows whoever speaks: 0 swaps (each talker keeps one ID), 1 handover
    # (track 5 passes from talker 1 to talker 2), separated by 20 deg at the handover frame.
    # IDF1: the best one-to-one pairing gives track 5 to one talker (4 frames): IDTP = 4;
    # GT detections 8 -> IDFN = 4; track detections 8 -> IDFP = 4; IDF1 = 8 / 16 = 0.5, while
    # MOTA = 1 (no miss, no false positive, no switch: every frame is matched).
    truth = [gt(0.1 * k, spk(1, 0.0, active=k < 4), spk(2, 20.0, active=k >= 4))
             for k in range(8)]
    ests = [est(0.1 * k, tracks=[track(5, 0.0 if k < 4 else 20.0)]) for k in range(8)]
    loc = locata_metrics(ests, truth)
    assert loc["track_swaps"] == 0
    assert loc["track_handovers"] == 1
    assert loc["handover_separation_deg"] == pytest.approx(20.0)
    m = mot_metrics(ests, truth)
    assert (m["idtp"], m["idfn"], m["idfp"]) == (4, 4, 4)
    assert m["idf1"] == pytest.approx(0.5)
    assert m["mota"] == pytest.approx(1.0)
    # one ID per talker instead: no handover, IDTP 8, IDF1 1
    ests = [est(0.1 * k, tracks=[track(5 if k < 4 else 6, 0.0 if k < 4 else 20.0)])
            for k in range(8)]
    assert locata_metrics(ests, truth)["track_handovers"] == 0
    assert math.isnan(locata_metrics(ests, truth)["handover_separation_deg"])
    m = mot_metrics(ests, truth)
    assert (m["idtp"], m["idfn"], m["idfp"], m["idf1"]) == (8, 0, 0, 1.0)


# ---------------------------------------------------------------------------- motmetrics

def test_mot_three_frame_toy_with_one_switch():
    # objects: 1 at 0 deg, 2 at 90 deg, active on all 3 frames -> GT = 6
    # frame 0: track 10 at 2 (d=2) <-> 1;  track 20 at 94 (d=4) <-> 2
    # frame 1: track 10 at 2 (d=2) <-> 1;  track 30 at 90 (d=0) <-> 2 -> IDSW (20 -> 30);
    #          track 40 at -120 is > 30 deg from both -> FP
    # frame 2: track 10 at 2 (d=2) <-> 1;  object 2 has no track -> FN
    # FN = 1, FP = 1, IDSW = 1 -> MOTA = 1 - 3/6 = 0.5
    # matches: 5, distance sum 2+4+2+0+2 = 10 -> MOTP = 2 deg
    # IDF1: best global ID pairing 1<->10 (3 frames) and 2<->20 or 2<->30 (1 frame):
    #   IDTP = 4, GT detections 6, hypothesis detections 2+3+1 = 6,
    #   IDFN = 6-4 = 2, IDFP = 6-4 = 2, IDF1 = 2*4 / (2*4 + 2 + 2) = 8/12
    truth = [gt(0.1 * k, spk(1, 0.0), spk(2, 90.0)) for k in range(3)]
    ests = [est(0.0, tracks=[track(10, 2.0), track(20, 94.0)]),
            est(0.1, tracks=[track(10, 2.0), track(30, 90.0), track(40, -120.0)]),
            est(0.2, tracks=[track(10, 2.0)])]
    m = mot_metrics(ests, truth)
    assert m["num_objects"] == 6
    assert m["num_misses"] == 1
    assert m["num_false_positives"] == 1
    assert m["num_switches"] == 1
    assert m["mota"] == pytest.approx(1.0 - (1 + 1 + 1) / 6.0)
    assert m["motp"] == pytest.approx(2.0)
    assert m["idf1"] == pytest.approx(8.0 / 12.0)
    # the LOCATA view of the same data: 1 swap, Pd = 5/6, 1 false track over 3 frames,
    # MAE = 10/5 = 2; OSPA (p=1, c=30): frame 0 (2+4)/2 = 3, frame 1 (2+0+30)/3 = 32/3,
    # frame 2 (2+30)/2 = 16 -> mean (3 + 32/3 + 16) / 3
    loc = locata_metrics(ests, truth)
    assert loc["track_swaps"] == 1
    assert loc["pd"] == pytest.approx(5.0 / 6.0)
    assert loc["false_track_rate"] == pytest.approx(1.0 / 3.0)
    assert loc["azimuth_mae_deg"] == pytest.approx(2.0)
    assert loc["ospa_deg"] == pytest.approx((3.0 + 32.0 / 3.0 + 16.0) / 3.0)


# ---------------------------------------------------------------------------- latency

def test_track_latency_0p3_s_after_onset():
    # frames every 0.1 s, t = 0..1.0. The source is silent on frames 0,1 and starts
    # talking at t = 0.2 (onset). A speaking track is assigned from t = 0.5 on:
    # latency = 0.5 - 0.2 = 0.3 s. The same track exists but is not 'speaking' on
    # 0.2..0.4: with use_all_tracks it counts from the onset -> latency 0.
    truth = [gt(0.1 * k, spk(1, 20.0, active=k >= 2)) for k in range(11)]
    ests = []
    for k in range(11):
        trs = [] if k < 2 else [track(5, 21.0, speaking=k >= 5)]
        ests.append(est(0.1 * k, tracks=trs))
    loc = locata_metrics(ests, truth)
    assert loc["n_onsets"] == 1 and loc["n_onsets_detected"] == 1
    assert loc["track_latency_s"] == pytest.approx(0.3)
    assert locata_metrics(ests, truth, use_all_tracks=True)["track_latency_s"] == \
        pytest.approx(0.0)


def test_track_latency_capped_at_activity_period():
    # source active on frames 0..4 (t = 0..0.4) and silent from t = 0.5, never tracked:
    # latency = period length = 0.5 - 0.0 = 0.5 s (up to the first silent frame).
    # A second onset at t = 0.8 (frames 8, 9) tracked at t = 0.9 -> 0.1 s.
    # mean = (0.5 + 0.1) / 2 = 0.3; 2 onsets, 1 detected.
    truth = [gt(0.1 * k, spk(1, 0.0, active=(k <= 4 or k >= 8))) for k in range(10)]
    ests = [est(0.1 * k, tracks=[track(3, 0.0)] if k == 9 else []) for k in range(10)]
    loc = locata_metrics(ests, truth)
    assert loc["n_onsets"] == 2 and loc["n_onsets_detected"] == 1
    assert loc["track_latency_s"] == pytest.approx(0.3)


# ---------------------------------------------------------------------------- JSON

def test_evaluate_json_nan_becomes_none():
    # no peaks and no tracks at all: MAEs and MOTP are undefined (NaN) -> None in JSON;
    # every source-frame is a miss: miss_rate 1, ACC 0, Pd 0, MOTA = 1 - 3/3 = 0
    truth = [gt(0.1 * k, spk(1, 0.0)) for k in range(3)]
    ests = [est(0.1 * k, voice=False) for k in range(3)]
    r = evaluate(ests, truth)
    text = json.dumps(r, allow_nan=False)  # raises if any NaN survived
    back = json.loads(text)
    assert back["doa"]["azimuth_mae_deg"] is None
    assert back["locata"]["azimuth_mae_deg"] is None
    assert back["mot"]["motp"] is None
    assert back["doa"]["miss_rate"] == 1.0 and back["doa"]["acc_at_10"] == 0.0
    assert back["locata"]["pd"] == 0.0
    assert back["mot"]["mota"] == pytest.approx(0.0)
    assert back["vad"]["recall"] == 0.0 and back["vad"]["precision"] is None

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (int, float, bool, str)

    assert plain(r)


def test_evaluate_with_no_truth_in_tolerance():
    r = evaluate([est(0.0)], [gt(5.0, spk(1, 0.0))])
    json.dumps(r, allow_nan=False)
    assert r["doa"]["n_skipped_frames"] == 1
    assert r["mot"]["mota"] is None and r["locata"]["ospa_deg"] is None


# ---------------------------------------------------------------------------- plots (smoke)

def _toy_run():
    truth, ests = [], []
    for k in range(30):
        t = 0.1 * k
        a = 40.0 - 4.0 * k  # speaker 1 walks from 40 to -76 deg
        truth.append(gt(t, spk(1, a, active=k < 20), spk(2, 170.0 + k, active=k >= 10)))
        peaks = [peak(a + 2.0, conf=0.9)]
        tracks = [track(1, a + 1.0)]
        if k >= 12:
            az2 = ((170.0 + k + 180.0) % 360.0) - 180.0
            peaks.append(peak(az2, conf=0.4))
            tracks.append(track(2, az2, speaking=k % 3 != 0))
        ests.append(est(t, peaks=peaks, tracks=tracks))
    return ests, truth


def test_plot_functions_write_files(tmp_path):
    from av_localization_ros.evaluation import plots

    ests, truth = _toy_run()
    p1 = tmp_path / "timeline.png"
    plots.plot_azimuth_timeline(ests, truth, p1)
    assert p1.stat().st_size > 1000 and p1.read_bytes()[:4] == b"\x89PNG"

    az = np.deg2rad(np.arange(-180.0, 180.0, 5.0))
    el = np.deg2rad(np.arange(-30.0, 31.0, 10.0))
    maps = []
    for k in range(8):
        m1 = np.exp(-0.5 * ((np.rad2deg(az) - 10 * k) / 15.0) ** 2)[None, :]
        maps.append((ns(0.1 * k), m1, az, np.zeros(1), [peak(10.0 * k)], [10.0 * k]))
    p2 = tmp_path / "maps_1d.png"
    plots.plot_doa_map_snapshots(maps, p2, n=6)
    assert p2.stat().st_size > 1000
    maps2 = []
    for k in range(3):
        m2 = np.outer(np.exp(-0.5 * (np.rad2deg(el) / 10.0) ** 2),
                      np.exp(-0.5 * ((np.rad2deg(az) - 20 * k) / 15.0) ** 2))
        maps2.append((ns(0.1 * k), m2, az, el, [peak(20.0 * k)], [(20.0 * k, 0.0), -90.0]))
    p3 = tmp_path / "maps_2d.png"
    plots.plot_doa_map_snapshots(maps2, p3, n=6)
    assert p3.stat().st_size > 1000


def test_overlay_frame_and_gif(tmp_path):
    import imageio.v3 as iio

    from av_localization_ros.core.camera import CameraGeometry
    from av_localization_ros.evaluation import plots

    h, w = 120, 160
    img = np.full((h, w, 3), 60, np.uint8)
    heat = np.zeros((h // 2, w // 2), np.float32)  # half resolution: gets resized
    heat[10:20, 50:70] = 1.0  # hot block -> image rows 20..40, cols 100..140
    cam = CameraGeometry.from_fov(w, h, hfov_deg=90.0)
    # a track straight ahead (az 0, el 0) projects to the image centre
    out = plots.overlay_frame(img, heat, [track(4, 0.0)], cam,
                              gt_boxes=[(10, 10, 40, 60), None])
    assert out.shape == img.shape and out.dtype == np.uint8
    # hot (h = 1): 0.4 * (60, 60, 60) + 0.6 * JET(255) = 0.4 * 60 + 0.6 * (0, 0, 128)
    # = (24, 24, 101) -> every channel moves by > 25
    assert (np.abs(out[30, 120].astype(int) - 60) > 25).all()
    assert np.array_equal(out[100, 20], img[100, 20])  # cold, away from drawings
    assert np.array_equal(out[35, 10], (0, 255, 0))  # GT box edge, green
    ring = out[int(round(cam.k[1, 2])) - 14:int(round(cam.k[1, 2])) + 15,
               int(round(cam.k[0, 2])) - 14:int(round(cam.k[0, 2])) + 15]
    assert (ring != 60).any()  # the track circle was drawn around the centre
    assert np.array_equal(img, np.full((h, w, 3), 60, np.uint8))  # input untouched
    # no heatmap, no camera: unchanged copy
    assert np.array_equal(plots.overlay_frame(img, None, [track(1, 0.0)], None), img)

    frames = [plots.overlay_frame(np.full((240, 640, 3), 20 * k, np.uint8)) for k in range(4)]
    gif = tmp_path / "overlay.gif"
    plots.write_overlay_gif(frames, gif, fps=5)
    assert gif.stat().st_size > 0 and gif.read_bytes()[:3] == b"GIF"
    back = iio.imread(gif, index=None)
    assert back.shape[0] == 4 and back.shape[2] <= 320
