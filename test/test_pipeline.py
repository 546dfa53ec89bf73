"""Pipeline: the published (averaged) DoA map and the tracker's per-window input, on a
physically simulated turn change (talker A, then talker B, in a reverberant room)."""
import numpy as np
import pytest

from av_localization_ros.core.params import defaults
from av_localization_ros.core.pipeline import Pipeline, rank_by_track_support
from av_localization_ros.core.types import AudioWindow, DoaPeak, TrackState
from roomsim import FS, RESPEAKER, process_windows, simulate, source_at, syllables

T0 = 1_000_000_000
AZ_A, AZ_B = -60.0, 70.0
CHANGE_S = 1.5


@pytest.fixture(scope="module")
def turn_change():
    """A speaks (noise bursts with a syllable envelope) for 1.5 s, then B for 1.5 s."""
    n = int(CHANGE_S * FS)
    a, b = syllables(2 * n, 5, floor=0.2), syllables(2 * n, 6, floor=0.2)
    a[n:] = 0.0
    b[:n] = 0.0
    return simulate(RESPEAKER, [source_at(AZ_A, dist=1.8), source_at(AZ_B, dist=1.8)], [a, b],
                    rt60=0.3, max_order=8, snr_db=40)


def run(audio, **over):
    p = defaults()
    p.update({"heatmap.enabled": False, **over})
    pipe = Pipeline(p, FS)
    return pipe, process_windows(pipe, audio, rate_hz=15.0, t0_ns=T0)


def near(peaks, az_deg, tol=15.0):
    return any(abs((np.rad2deg(q.azimuth) - az_deg + 180) % 360 - 180) <= tol for q in peaks)


def test_published_map_is_the_running_average_of_the_window_maps(turn_change):
    tau = 0.3
    _, raw = run(turn_change, **{"doa.map_smoothing_s": 0.0})  # the per-window maps
    _, pub = run(turn_change, **{"doa.map_smoothing_s": tau})
    assert [o.stamp_ns for o in raw] == [o.stamp_ns for o in pub]
    np.testing.assert_array_equal(pub[0].doa.doa_map, raw[0].doa.doa_map)
    for k in range(1, len(pub)):
        a = np.exp(-(pub[k].stamp_ns - pub[k - 1].stamp_ns) / 1e9 / tau)
        expected = a * pub[k - 1].doa.doa_map + (1 - a) * raw[k].doa.doa_map
        np.testing.assert_allclose(pub[k].doa.doa_map, expected, rtol=1e-5, atol=1e-6)
    # the tracker reads the window peaks either way: identical tracks
    assert [[(t.track_id, t.azimuth) for t in o.tracks] for o in raw] == \
        [[(t.track_id, t.azimuth) for t in o.tracks] for o in pub]


def test_turn_change_tracker_follows_the_new_talker_while_the_map_remembers(turn_change):
    _, outs = run(turn_change)  # defaults: lookahead, map smoothing, activity ranking
    change_ns = T0 + int(CHANGE_S * 1e9)
    before = [o for o in outs if T0 + 0.7e9 <= o.stamp_ns < change_ns - 0.2e9]
    assert before and all(near(o.doa.peaks, AZ_A) for o in before)
    assert all(any(t.speaking and near([t], AZ_A) for t in o.tracks) for o in before[-5:])
    after = [o for o in outs if change_ns + 0.05e9 <= o.stamp_ns <= change_ns + 0.5e9]
    assert after
    # from 50 ms after the change the speaking track is B's: the tracker is handed the peak
    # that is loudest in the window (by the map's height alone A would keep it ~0.15 s longer)
    for o in after:
        speaking = [t for t in o.tracks if t.speaking]
        assert speaking and all(near([t], AZ_B) for t in speaking), [
            (t.track_id, np.rad2deg(t.azimuth)) for t in speaking]
    # the published map still shows A right after the change, and B once it settles
    assert near(outs[[o.stamp_ns >= change_ns for o in outs].index(True)].doa.peaks, AZ_A)
    assert all(near(o.doa.peaks, AZ_B) for o in outs if o.stamp_ns >= change_ns + 0.6e9)


def test_published_map_restarts_after_a_step_back_in_time(turn_change):
    p = defaults()
    p.update({"heatmap.enabled": False})
    pipe = Pipeline(p, FS)
    win = pipe.window_samples
    a = pipe.process(AudioWindow(turn_change[:, :win], T0, FS))
    b = pipe.process(AudioWindow(turn_change[:, 2000:2000 + win], T0 + 125_000_000, FS))
    assert not np.array_equal(b.doa.doa_map, a.doa.doa_map)
    # a window from the past (e.g. a replay restarted): the average starts over from it
    back = pipe.process(AudioWindow(turn_change[:, 30000:30000 + win], T0 - 10_000_000_000, FS))
    fresh = Pipeline(p, FS).process(AudioWindow(turn_change[:, 30000:30000 + win],
                                                T0 - 10_000_000_000, FS))
    np.testing.assert_allclose(back.doa.doa_map, fresh.doa.doa_map, atol=1e-6)


def _track(tid, az_deg, speaking):
    return TrackState(track_id=tid, azimuth=np.deg2rad(az_deg), elevation=0.0,
                      azimuth_rate=0.0, elevation_rate=0.0, covariance=np.eye(4) * 1e-3,
                      confidence=0.8, speaking=speaking, age_s=2.0)


def test_published_peaks_are_ranked_by_track_support():
    # map peaks: the previous talker at 10 deg (still the highest on the averaged map, its
    # track silent now), a reflection at 100 deg (0.9), the current talker at -40 deg (0.6,
    # its track speaking at -35, inside the 25 deg gate); one silent track far from any peak
    peaks = [DoaPeak(np.deg2rad(10.0), 0.0, 1.0), DoaPeak(np.deg2rad(100.0), 0.0, 0.9),
             DoaPeak(np.deg2rad(-40.0), 0.0, 0.6)]
    tracks = [_track(1, 12.0, False), _track(2, -35.0, True), _track(3, 170.0, False)]
    ranked = rank_by_track_support(peaks, tracks, np.deg2rad(25.0))
    # (0.6 + 1) / 2 = 0.8, (1 + 0.5) / 2 = 0.75, (0.9 + 0) / 2 = 0.45
    assert [round(float(np.rad2deg(q.azimuth))) for q in ranked] == [-40, 10, 100]
    assert [q.confidence for q in ranked] == pytest.approx([0.8, 0.75, 0.45])
    # no tracks: the map's order, confidences halved
    plain = rank_by_track_support(peaks, [], np.deg2rad(25.0))
    assert [q.confidence for q in plain] == pytest.approx([0.5, 0.45, 0.3])
    assert rank_by_track_support([], tracks, np.deg2rad(25.0)) == []
