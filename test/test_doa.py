"""DoA estimation against physical ground truth.

Signals are simulated with pyroomacoustics (free field and low-order image-source rooms) from
white noise or real speech (../shared/data/speech; those tests skip without it). Every check
compares with the geometry that produced the signals, never with earlier outputs.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf

from av_localization_ros.core import doa as D
from av_localization_ros.core.geometry import MicArray
from av_localization_ros.core.params import defaults
from av_localization_ros.core.stft import hann_periodic, stft, stft_freqs, window_spectra
from av_localization_ros.core.types import AudioWindow, vector_to_azel
from roomsim import FS, RESPEAKER, simulate, source_at, syllables, white

C = 343.0
NFFT, HOP = 512, 256


# ------------------------------------------------------------------------------------ helpers
def az_err_deg(a, b):
    return np.abs(np.rad2deg(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))))


def load_speech(path, n):
    x, fs = sf.read(str(path), dtype="float64")
    if x.ndim > 1:
        x = x.mean(axis=1)
    if fs != FS:  # some files are 24/44.1/48 kHz
        fr = Fraction(FS, fs).limit_denominator(1000)
        x = ss.resample_poly(x, fr.numerator, fr.denominator)
    x = x[:n] if len(x) >= n else np.concatenate([x, np.zeros(n - len(x))])
    return x / (np.std(x) + 1e-12)


def windows(y, stamp0=1_000_000_000, win=4096, step=1067):
    """Causal windows at ~15 Hz, as the pipeline cuts them."""
    for s in range(0, y.shape[1] - win + 1, step):
        yield s, AudioWindow(y[:, s:s + win], stamp_ns=stamp0 + int(round(s * 1e9 / FS)),
                             sample_rate=FS)


def params(**over):
    p = defaults()
    p["sample_rate"] = FS
    p.update(over)
    return p


# ------------------------------------------------------------------------------------ STFT
def test_stft_matches_definition():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2000)).astype(np.float32)
    X = stft(x, NFFT, HOP)
    t = 1 + (2000 - NFFT) // HOP
    assert X.shape == (3, NFFT // 2 + 1, t) and X.dtype == np.complex64
    n = np.arange(NFFT)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / NFFT)  # periodic Hann
    assert np.allclose(hann_periodic(NFFT), w, atol=1e-7)
    for ch, fr in ((0, 0), (2, t - 1)):
        ref = np.fft.rfft(w * x[ch, fr * HOP:fr * HOP + NFFT])
        assert np.allclose(X[ch, :, fr], ref, rtol=1e-4, atol=1e-3)
    # a 1 kHz tone lands in bin 1000 / (fs / nfft) = 32
    tone = np.sin(2 * np.pi * 1000 * np.arange(4096) / FS)
    assert np.argmax(np.abs(stft(tone, NFFT, HOP)).mean(axis=1)) == 32
    assert stft(np.zeros((2, 100)), NFFT, HOP).shape == (2, 257, 0)
    assert np.isclose(stft_freqs(NFFT, FS)[32], 1000.0)


# ------------------------------------------------------------------------------------ GCC-PHAT
@pytest.mark.parametrize("delay", [7, -12, 0])
def test_gcc_phat_integer_delay(delay):
    s = white(8000, 1)
    pad = 40
    x_j = s[pad:-pad]
    x_i = s[pad - delay:len(s) - pad - delay]  # x_i[n] = x_j[n - delay]: x_i lags by `delay`
    tau, cc = D.gcc_phat(x_i, x_j, FS, max_tau=0.005)
    assert abs(tau * FS - delay) < 0.05
    assert cc.size == 2 * int(np.ceil(0.005 * FS * 16)) + 1


@pytest.mark.parametrize("delay", [2.3, -4.75])
def test_gcc_phat_fractional_delay(delay):
    n = 16384
    s = white(n, 2)
    f = np.fft.rfftfreq(n)
    x_i = np.fft.irfft(np.fft.rfft(s) * np.exp(-2j * np.pi * f * delay), n)  # exact delay
    tau, _ = D.gcc_phat(x_i[200:-200], s[200:-200], FS, max_tau=0.002, interp=32)
    assert abs(tau * FS - delay) < 0.1


def test_gcc_phat_sign_matches_geometry():
    """tau_ij = (p_j - p_i) . u / c on a physically simulated 2-mic pair (10 cm)."""
    mics = np.array([[0.05, 0.0, 0.0], [-0.05, 0.0, 0.0]])
    for az in (30.0, 150.0):
        u = source_at(az) / 2.0
        y = simulate(mics, [source_at(az, dist=3.0)], [white(12000, 3)], rt60=0.0)
        tau, _ = D.gcc_phat(y[0], y[1], FS, max_tau=0.1 / C)
        expected = (mics[1] - mics[0]) @ u / C
        assert abs(tau - expected) < 3e-6, (az, tau, expected)


# ------------------------------------------------------------------------------------ grid / peaks
def test_direction_grid():
    g = D.DirectionGrid.azimuth_only(2.0)
    assert g.shape == (1, 180) and g.azimuth_wraps
    assert np.isclose(g.azimuths[0], -np.pi) and np.all(np.diff(g.azimuths) > 0)
    s = D.DirectionGrid.sphere(5.0, 10.0, -20.0, 80.0)
    assert s.shape == (11, 72)
    u = s.unit_vectors
    assert u.shape == (11, 72, 3) and np.allclose(np.linalg.norm(u, axis=-1), 1.0)
    az, el = vector_to_azel(u)
    assert np.allclose(el[:, 0], s.elevations) and np.allclose(az[0], np.angle(np.exp(1j * s.azimuths)))
    p = params(**{"doa.azimuth_only": False, "doa.azimuth_resolution_deg": 3.0})
    assert D.DirectionGrid.from_params(p).shape == (11, 120)
    ring = D.DirectionGrid.from_params(params(**{"doa.azimuth_only_elevation_deg": 25.0}))
    assert ring.shape == (1, 180) and np.isclose(ring.elevations[0], np.deg2rad(25.0))
    assert np.allclose(ring.unit_vectors[0, :, 2], np.sin(np.deg2rad(25.0)))
    with pytest.raises(ValueError, match="ring"):
        D.DirectionGrid.azimuth_only(2.0, 90.0)


def test_ring_elevation_matches_the_delays_of_an_elevated_source():
    # free field, source 30 deg above the array plane: its in-plane delays are cos(30) of a
    # horizontal source's, so only the ring at 30 deg sees fully coherent pairs (SRP-PHAT = 1)
    y = simulate(RESPEAKER, [source_at(40.0, 30.0, dist=2.0)], [white(8000, 1)], rt60=0.0)
    X = window_spectra(AudioWindow(y, 0, FS), NFFT, HOP).transpose(0, 2, 1)  # (M, F, T)
    freqs = stft_freqs(NFFT, FS)
    peak = {}
    for el in (0.0, 30.0):
        g = D.DirectionGrid.azimuth_only(2.0, el)
        m = D.srp_phat_map(X, freqs, RESPEAKER, g, freq_range=(300.0, 7500.0))
        assert abs(np.rad2deg(g.azimuths[m.argmax()]) - 40.0) <= 2.0
        peak[el] = m.max()
    assert peak[30.0] > 0.99 and peak[0.0] < 0.95


def test_elevated_ring_separates_two_elevated_talkers():
    # two talkers 55 deg apart, both ~30 deg above the array, in a reverberant room: on the
    # horizontal ring the mismatched delays merge them; on the 30 deg ring MUSIC's two peaks
    # are the two talkers
    n = 3 * FS
    srcs = [source_at(-30.0, 30.0, 1.5), source_at(25.0, 28.0, 1.7)]
    y = simulate(RESPEAKER, srcs, [syllables(n, 20, floor=0.3), syllables(n, 30, floor=0.3)],
                 rt60=0.3, max_order=10, snr_db=20)
    acc = {}
    for el in (0.0, 30.0):
        p = params(**{"doa.azimuth_only_elevation_deg": el, "doa.max_sources": 2})
        errs = _run_estimator(y, p, np.deg2rad([-30.0, 25.0]))
        acc[el] = np.mean(errs[3:] <= 10.0)
    assert acc[30.0] >= 0.85 and acc[30.0] >= acc[0.0] + 0.3, acc


def _bumps(grid, centres_deg, heights, width_deg=8.0, floor=0.2):
    az = grid.azimuths[None, :]
    m = np.full(grid.shape, floor)
    for c, h in zip(centres_deg, heights):
        d = np.angle(np.exp(1j * (az - np.deg2rad(c))))
        m = m + h * np.exp(-0.5 * (d / np.deg2rad(width_deg)) ** 2)
    return m


@pytest.mark.parametrize("centre", [180.0, -179.0, 179.0])
def test_find_peaks_wraps_around_180(centre):
    g = D.DirectionGrid.azimuth_only(2.0)
    peaks = D.find_peaks(_bumps(g, [centre, 60.0], [1.0, 0.6]), g, 3, np.deg2rad(20), 0.3)
    assert len(peaks) == 2  # the bump split by the +-180 seam is one peak
    assert az_err_deg(peaks[0].azimuth, np.deg2rad(centre)) < 1.0
    assert -np.pi < peaks[0].azimuth <= np.pi
    assert peaks[0].confidence == pytest.approx(1.0)
    assert az_err_deg(peaks[1].azimuth, np.deg2rad(60.0)) < 1.0
    assert 0.4 < peaks[1].confidence < 0.8


def test_find_peaks_separation_threshold_and_count():
    g = D.DirectionGrid.azimuth_only(1.0)
    m = _bumps(g, [0.0, 12.0, 90.0, -90.0, 150.0], [1.0, 0.9, 0.5, 0.35, 0.1], width_deg=3.0)
    peaks = D.find_peaks(m, g, max_sources=3, min_separation_rad=np.deg2rad(20), min_rel_height=0.3)
    got = sorted(round(float(np.rad2deg(p.azimuth))) for p in peaks)
    assert got == [-90, 0, 90]  # 12 deg merged into 0, 150 deg below 0.3
    assert [p.confidence for p in peaks] == sorted([p.confidence for p in peaks], reverse=True)
    assert len(D.find_peaks(m, g, 1, np.deg2rad(20), 0.3)) == 1
    assert D.find_peaks(np.ones(g.shape), g, 3, 0.3, 0.3) == []


# ------------------------------------------------------------------------------------ maps
@pytest.mark.parametrize("az", [-150.0, -95.0, -30.0, 0.0, 45.0, 110.0, 180.0])
def test_srp_phat_single_source_free_field(az):
    y = simulate(RESPEAKER, [source_at(az, el_deg=10.0)], [white(8000, 4)], rt60=0.0, snr_db=20)
    X = stft(y, NFFT, HOP)
    g = D.DirectionGrid.azimuth_only(2.0)
    m = D.srp_phat_map(X, stft_freqs(NFFT, FS), RESPEAKER, g, freq_range=(300, 7500))
    peaks = D.find_peaks(m, g, 1, np.deg2rad(20), 0.3)
    assert az_err_deg(peaks[0].azimuth, np.deg2rad(az)) <= 5.0
    assert m.shape == g.shape and m.max() <= 1.0 + 1e-6


def test_music_map_two_sources_free_field():
    srcs = [source_at(70.0, dist=2.0), source_at(-40.0, dist=1.5)]
    y = simulate(RESPEAKER, srcs, [white(16000, 5), white(16000, 6)], rt60=0.0, snr_db=30)
    X = stft(y, NFFT, HOP)
    g = D.DirectionGrid.azimuth_only(2.0)
    m = D.music_map(X, stft_freqs(NFFT, FS), RESPEAKER, g, n_sources=2, freq_range=(300, 7500))
    assert m.shape == g.shape and np.isclose(m.max(), 1.0)
    peaks = D.find_peaks(m, g, 2, np.deg2rad(20), 0.3)
    assert len(peaks) == 2
    for true in (70.0, -40.0):
        assert min(az_err_deg(p.azimuth, np.deg2rad(true)) for p in peaks) <= 5.0


def test_sphere_grid_finds_elevation_on_non_planar_array():
    # tetrahedral array, 4 cm radius (e.g. an Eigenmike-style "A-format" capsule set)
    tet = 0.04 * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    g = D.DirectionGrid.sphere(2.0, 2.0, -60.0, 80.0)
    for az, el in ((40.0, 35.0), (-120.0, -20.0)):
        y = simulate(tet, [source_at(az, el, dist=2.5)], [white(8000, 7)], rt60=0.0, snr_db=25)
        m = D.srp_phat_map(stft(y, NFFT, HOP), stft_freqs(NFFT, FS), tet, g, freq_range=(300, 7500))
        p = D.find_peaks(m, g, 1, np.deg2rad(20), 0.3)[0]
        assert az_err_deg(p.azimuth, np.deg2rad(az)) <= 5.0
        assert abs(np.rad2deg(p.elevation) - el) <= 5.0


# ------------------------------------------------------------------------------------ estimator
def _run_estimator(y, p, truth_az, active=None):
    est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"), p)
    errs = []
    for s, w in windows(y):
        doa_map, peaks = est.estimate(w)
        assert doa_map.dtype == np.float32 and doa_map.shape == est.grid.shape
        assert 0.0 <= doa_map.min() and doa_map.max() <= 1.0
        assert all(0.0 <= q.confidence <= 1.0 for q in peaks)
        if active is not None and not active(s + 4096):
            continue
        paz = np.array([q.azimuth for q in peaks])
        errs.append([az_err_deg(paz, a).min() if paz.size else 180.0 for a in truth_az])
    return np.array(errs)


@pytest.mark.parametrize("method", ["srp_phat", "music"])
def test_estimator_single_source_reverberant_room(method):
    az = 130.0
    y = simulate(RESPEAKER, [source_at(az, 15.0, dist=2.0)], [white(24000, 8)], rt60=0.4,
                 max_order=8, snr_db=15)
    errs = _run_estimator(y, params(**{"doa.method": method, "doa.freq_max_hz": 7500.0}),
                          [np.deg2rad(az)])
    # early reflections bias a 64 mm aperture by a few degrees (MUSIC ~6 deg in this room)
    assert np.mean(errs[2:] <= 10.0) >= 0.9 and np.median(errs) <= 7.0


def test_estimator_two_simultaneous_sources_music():
    srcs = [source_at(-100.0, 10.0, dist=1.8), source_at(20.0, 5.0, dist=2.2)]
    y = simulate(RESPEAKER, srcs, [white(24000, 9), white(24000, 10)], rt60=0.3, max_order=6,
                 snr_db=20)
    errs = _run_estimator(y, params(**{"doa.method": "music", "doa.freq_max_hz": 7500.0}),
                          np.deg2rad([-100.0, 20.0]))
    assert np.mean(errs[3:] <= 10.0) >= 0.9


def test_estimator_real_speech_reverberant(shared_speech_dir):
    files = sorted(shared_speech_dir.glob("cmu_arctic_*.wav"))
    if not files:
        pytest.skip("no cmu_arctic_*.wav in ../shared/data/speech")
    n = 3 * FS
    s = load_speech(files[0], n)
    az = -65.0
    y = simulate(RESPEAKER, [source_at(az, 20.0, dist=2.0)], [s], rt60=0.5, max_order=10, snr_db=20)
    # ground-truth activity from the dry signal: 32 ms frames within 25 dB of its loud frames
    e = np.convolve(s ** 2, np.ones(512) / 512, mode="same")
    thr = np.percentile(e, 95) * 10 ** (-2.5)
    for method in ("music", "srp_phat"):
        errs = _run_estimator(y, params(**{"doa.method": method, "doa.freq_max_hz": 7500.0}),
                              [np.deg2rad(az)], active=lambda k: e[min(k, n) - 256] > thr)
        assert len(errs) > 10
        assert np.mean(errs <= 10.0) >= 0.85, method
        assert np.median(errs) <= 5.0, method


def test_estimator_two_talkers_real_speech(shared_speech_dir):
    files = sorted(shared_speech_dir.glob("cmu_arctic_us_*.wav"))
    if len(files) < 4:
        pytest.skip("need cmu_arctic_us_*.wav speech in ../shared/data/speech")
    n = 3 * FS
    s1, s2 = load_speech(files[0], n), load_speech(files[3], n)  # male aew, female axb
    truth = np.deg2rad([35.0, -95.0])
    y = simulate(RESPEAKER, [source_at(35.0, 10.0, 1.5), source_at(-95.0, 15.0, 2.0)], [s1, s2],
                 rt60=0.3, max_order=8, snr_db=25)
    e1 = np.convolve(s1 ** 2, np.ones(512) / 512, mode="same")
    e2 = np.convolve(s2 ** 2, np.ones(512) / 512, mode="same")
    both = lambda k: (e1[min(k, n) - 256] > np.percentile(e1, 95) * 0.01) and \
        (e2[min(k, n) - 256] > np.percentile(e2, 95) * 0.01)  # noqa: E731
    errs = _run_estimator(y, params(**{"doa.method": "music", "doa.freq_max_hz": 7500.0}), truth,
                          active=both)
    assert len(errs) > 5
    assert np.mean(errs <= 10.0) >= 0.75


def test_estimator_edge_cases():
    p = params()
    est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"), p)
    with pytest.raises(ValueError):
        est.estimate(AudioWindow(np.zeros((3, 4096), np.float32), 0, FS))
    m, pk = est.estimate(AudioWindow(np.zeros((4, 300), np.float32), 0, FS))  # < nfft
    assert pk == [] and m.shape == est.grid.shape and not m.any()
    for method in ("srp_phat", "music"):
        est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"),
                             params(**{"doa.method": method}))
        m, pk = est.estimate(AudioWindow(np.zeros((4, 4096), np.float32), 10, FS))  # silence
        assert pk == [] and np.all(np.isfinite(m))
        # a zero-filled gap inside real signal must not break the next windows
        y = simulate(RESPEAKER, [source_at(-20.0)], [white(12000, 11)], rt60=0.0, snr_db=20)
        y[:, 3000:5000] = 0.0
        for _, w in windows(y, stamp0=10 ** 10):
            m, pk = est.estimate(w)
            assert np.all(np.isfinite(m))
        assert az_err_deg(pk[0].azimuth, np.deg2rad(-20.0)) <= 5.0
    with pytest.raises(ValueError):
        D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"), params(**{"doa.method": "x"}))


def test_estimator_sample_rate_from_window_and_reset_on_time_jump():
    p = params()
    p["sample_rate"] = 0  # "take it from AudioInfo": the estimator sizes itself on the first window
    est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"), p)
    y = simulate(RESPEAKER, [source_at(75.0)], [white(8000, 12)], rt60=0.0, snr_db=25)
    _, pk = est.estimate(AudioWindow(y[:, :4096], 5 * 10 ** 9, FS))
    assert az_err_deg(pk[0].azimuth, np.deg2rad(75.0)) <= 5.0
    # stamps going back (replay restarted) drop the smoothed state: a new source shows at once
    y2 = simulate(RESPEAKER, [source_at(-110.0)], [white(8000, 13)], rt60=0.0, snr_db=25)
    _, pk = est.estimate(AudioWindow(y2[:, :4096], 10 ** 9, FS))
    assert az_err_deg(pk[0].azimuth, np.deg2rad(-110.0)) <= 5.0


@pytest.mark.parametrize("method", ["music", "srp_phat"])
def test_peak_activity_names_the_talker_who_is_loud_now(method):
    """Talker A (-60 deg) for 1.5 s, then talker B (+70 deg): with heavy smoothing A's peak
    stays on the map after the change, but peak_activity ranks B first at once."""
    n = 24000
    a = np.concatenate([white(n, 11), np.zeros(n)])
    b = np.concatenate([np.zeros(n), white(n, 12)])
    y = simulate(RESPEAKER, [source_at(-60.0), source_at(70.0)], [a, b], rt60=0.3, max_order=6,
                 snr_db=20)
    est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"),
                         params(**{"doa.method": method, "doa.smoothing_s": 2.0}))
    first_b_window = None
    for s, w in windows(y):
        _, peaks = est.estimate(w)
        if s >= n and first_b_window is None:  # the first window with B only
            first_b_window = True
            near = {name: [q for q in peaks if az_err_deg(q.azimuth, np.deg2rad(az)) <= 15]
                    for name, az in (("A", -60.0), ("B", 70.0))}
            assert near["A"] and near["B"], "smoothing keeps both talkers on the map"
            act = est.peak_activity([near["A"][0], near["B"][0]])
            assert act[1] > act[0] + 0.1
    # a lone talker: the beam towards it takes most of the power, the opposite side little
    lone = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"),
                          params(**{"doa.method": method}))
    for _, w in windows(y[:, :n]):
        lone.estimate(w)
    toward, away = lone.peak_activity([D.DoaPeak(np.deg2rad(-60.0), 0.0, 1.0),
                                       D.DoaPeak(np.deg2rad(120.0), 0.0, 1.0)])
    assert toward > 0.5 and toward > away + 0.2
    assert lone.peak_activity([]) == []


def test_grid_nearest_index():
    g = D.DirectionGrid.azimuth_only(2.0)
    for az_deg in (-180.0, -179.2, 179.2, 0.9, 1.1, 90.0):
        i = g.nearest_index(np.deg2rad(az_deg), 0.0)
        assert az_err_deg(g.azimuths[i], np.deg2rad(az_deg)) <= 1.0 + 1e-9
    s = D.DirectionGrid.sphere(10.0, 10.0, -20.0, 80.0)
    i = s.nearest_index(np.deg2rad(-95.0), np.deg2rad(33.0))
    e, a = divmod(i, s.azimuths.size)
    assert np.rad2deg(s.elevations[e]) == pytest.approx(30.0)
    assert az_err_deg(s.azimuths[a], np.deg2rad(-95.0)) <= 5.0 + 1e-9


def test_non_finite_samples_are_refused_not_smoothed_in():
    """One NaN stayed in SRP-PHAT's recursive average and emptied every later map."""
    from av_localization_ros.core.doa import gcc_phat
    p = defaults()
    p["doa.method"] = "srp_phat"
    est = D.DoaEstimator(MicArray.from_preset("respeaker_usb_4mic_v2"), p)
    x = np.random.default_rng(0).standard_normal((4, 4096)).astype(np.float32)
    x[2, 100] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.estimate(D.AudioWindow(x, 0, 16000))
    with pytest.raises(ValueError, match="NaN"):
        gcc_phat(x[2], x[0], 16000)
