"""Voice activity detection on real speech (../shared/data/speech, skipped without it) and on
synthetic signals; truth comes from how the test signals were built."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.signal as ss
import soundfile as sf

from av_localization_ros.core.params import defaults
from av_localization_ros.core.types import AudioWindow
from av_localization_ros.core.vad import EnergyVad, SileroVad, make_vad

FS = 16000
WIN = 4096
STEP = 1067  # ~15 windows per second, like the pipeline driven by a 15 fps camera


def stream(vad, x, fs=FS, stamp0=2_000_000_000, win=None, step=None):
    """Probabilities of causal windows over ``x`` ``(M, N)``, with the sample index each ends at."""
    win = win or int(round(WIN * fs / FS))
    step = step or int(round(STEP * fs / FS))
    out = []
    for s in range(0, x.shape[1] - win + 1, step):
        w = AudioWindow(x[:, s:s + win].astype(np.float32), stamp0 + int(round(s * 1e9 / fs)), fs)
        out.append((s + win, vad.probability(w)))
    return np.array(out)


def speech_and_activity(path, fs=FS, n_s=3.0):
    """Real speech at ``fs`` and its truth: dry-signal 32 ms energy within 20 dB of its loud part."""
    x, sr = sf.read(str(path), dtype="float64")
    x = x.mean(axis=1) if x.ndim > 1 else x
    if sr != fs:
        fr = Fraction(fs, sr).limit_denominator(1000)
        x = ss.resample_poly(x, fr.numerator, fr.denominator)
    x = x[: int(n_s * fs)]
    x = 0.1 * x / np.sqrt(np.mean(x ** 2))
    e = np.convolve(x ** 2, np.ones(512) / 512, mode="same")
    return x, e > np.percentile(e, 95) * 0.01


def noisy_scene(speech, rng, noise_rel_db=-20.0, lead_s=2.0, m=4):
    """``lead_s`` of noise alone, then speech + the same noise, on ``m`` channels."""
    n_lead = int(lead_s * FS)
    s = np.concatenate([np.zeros(n_lead), speech])
    noise = rng.standard_normal((m, s.size)) * np.sqrt(np.mean(speech ** 2)) * 10 ** (noise_rel_db / 20)
    return s[None, :] + noise, n_lead


def _speech_file(shared_speech_dir):
    files = sorted(shared_speech_dir.glob("cmu_arctic_us_*.wav"))
    if not files:
        pytest.skip("no cmu_arctic_us_*.wav in ../shared/data/speech")
    return files[0]


# ------------------------------------------------------------------------------------ energy VAD
@pytest.mark.parametrize("snr_db", [20.0, 10.0])
def test_energy_vad_separates_speech_from_noise(shared_speech_dir, snr_db):
    speech, act = speech_and_activity(_speech_file(shared_speech_dir))
    x, n_lead = noisy_scene(speech, np.random.default_rng(1), noise_rel_db=-snr_db)
    r = stream(EnergyVad(defaults()), x)
    ends, p = r[:, 0].astype(int), r[:, 1]
    noise_only = (ends < n_lead) & (ends > 1.0 * FS)  # after 1 s of adaptation
    in_speech = ends > n_lead
    truth = np.zeros(x.shape[1], bool)
    truth[n_lead:] = act
    active = in_speech & truth[ends - 1]
    assert p[noise_only].max() < 0.5
    assert np.mean(p[active] >= 0.5) >= 0.8
    assert np.mean(p[active]) > np.mean(p[noise_only]) + 0.5


def test_energy_vad_synthetic_voiced_bursts_vs_stationary_noise():
    """No data needed: harmonic bursts (120 Hz, 4 Hz syllable rate) over white noise."""
    rng = np.random.default_rng(2)
    n = 5 * FS
    t = np.arange(n) / FS
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 25))
    env = (np.sin(2 * np.pi * 4 * t) > 0) & (t > 2.5)  # bursts after 2.5 s
    x = 0.05 * voiced * env
    noise = 0.003 * rng.standard_normal((4, n))
    r = stream(EnergyVad(defaults()), x[None, :] + noise)
    ends, p = r[:, 0].astype(int), r[:, 1]
    assert p[(ends > FS) & (ends < 2.5 * FS)].max() < 0.3
    assert p[ends > 2.8 * FS].mean() > 0.8


@pytest.mark.parametrize("level", [1e-4, 1e-2, 0.2])
def test_energy_vad_stationary_noise_of_any_level_is_not_speech(level):
    x = level * np.random.default_rng(3).standard_normal((2, 3 * FS))
    r = stream(EnergyVad(defaults()), x)
    assert r[r[:, 0] > FS, 1].max() < 0.3


def test_energy_vad_silence_gaps_and_time_jumps():
    v = EnergyVad(defaults())
    assert v.probability(AudioWindow(np.zeros((4, WIN), np.float32), 0, FS)) == 0.0
    rng = np.random.default_rng(4)
    noise = (0.01 * rng.standard_normal((4, WIN))).astype(np.float32)
    for k in range(20):
        p = v.probability(AudioWindow(noise, 10 ** 9 + k * 66_666_667, FS))
    assert p < 0.3
    # a loud burst right after a restart of the stream (stamps back in time) is handled
    loud = (0.3 * rng.standard_normal((4, WIN))).astype(np.float32)
    p = v.probability(AudioWindow(loud, 0, FS))
    assert 0.0 <= p <= 1.0 and np.isfinite(p)
    # short windows (< nfft) give a valid number
    assert 0.0 <= v.probability(AudioWindow(loud[:, :100], 10 ** 8, FS)) <= 1.0


def test_make_vad():
    p = defaults()
    assert isinstance(make_vad(p), EnergyVad)
    p["vad.method"] = "silero"
    assert isinstance(make_vad(p), SileroVad)  # lazy: no import yet
    p["vad.method"] = "nope"
    with pytest.raises(ValueError):
        make_vad(p)


# ------------------------------------------------------------------------------------ Silero
@pytest.fixture(scope="module")
def silero_available():
    try:
        import silero_vad  # noqa: F401
    except Exception as exc:  # ImportError, or torch failing to load
        pytest.skip(f"silero_vad not importable ({exc!r})")


@pytest.mark.parametrize("fs", [16000, 48000])
def test_silero_vad_speech_vs_noise(silero_available, shared_speech_dir, fs):
    speech, act = speech_and_activity(_speech_file(shared_speech_dir), fs=fs, n_s=2.5)
    rng = np.random.default_rng(5)
    lead = int(1.5 * fs)
    s = np.concatenate([np.zeros(lead), speech])
    x = s[None, :] + 0.003 * rng.standard_normal((2, s.size))
    r = stream(SileroVad(defaults()), x, fs=fs)
    ends, p = r[:, 0].astype(int), r[:, 1]
    truth = np.zeros(x.shape[1], bool)
    truth[lead:] = act
    noise_only = ends < lead
    active = (ends > lead) & truth[ends - 1]
    assert p[noise_only].max() < 0.5
    assert np.mean(p[active] >= 0.5) >= 0.8
