"""Log-mel features shared by training, evaluation and the runtime (one definition, no drift).

16 kHz mono, periodic-Hann STFT (``core.stft``) with nfft=512 (32 ms) and hop=160 (10 ms),
64 triangular mel bands (HTK mel scale, 0..8 kHz, area-normalised), ``log(mel + 1e-6)``, then
a fixed affine scaling ``(x + 6) / 4`` so values sit roughly in [-2, 2] (FP16-friendly).
A window of ``N_FRAMES`` frames needs ``N_SAMPLES`` samples (1.0 s).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..core.stft import stft

SAMPLE_RATE = 16_000
N_FFT = 512
HOP = 160
N_MELS = 64
N_FRAMES = 96
N_SAMPLES = N_FFT + (N_FRAMES - 1) * HOP  # 15712 samples = 0.982 s
WINDOW_S = 1.0


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, fs: int = SAMPLE_RATE) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` triangular filters, each with unit area."""
    freqs = np.arange(n_fft // 2 + 1) * fs / n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(fs / 2.0), n_mels + 2))
    fb = np.zeros((n_mels, freqs.size))
    for i in range(n_mels):
        lo, c, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(c - lo, 1e-9)
        down = (hi - freqs) / max(hi - c, 1e-9)
        fb[i] = np.maximum(0.0, np.minimum(up, down))
        s = fb[i].sum()
        if s > 0:
            fb[i] /= s
    fb = fb.astype(np.float32)
    fb.setflags(write=False)
    return fb


def to_mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono mix (channel mean) resampled to 16 kHz, float32."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"audio must be (n_channels, n_samples) or (n_samples,), got {x.shape}")
    if int(sample_rate) != SAMPLE_RATE:
        from math import gcd

        from scipy.signal import resample_poly
        g = gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return x


def fit_length(x: np.ndarray, n: int = N_SAMPLES) -> np.ndarray:
    """Keep the *last* ``n`` samples (the most recent audio); tile short clips (as EZ-VSL does)."""
    if x.size == 0:
        raise ValueError("zero-length audio")
    if x.size < n:
        x = np.tile(x, int(np.ceil(n / x.size)))[:n] if x.size < n else x
    return x[-n:]


def log_mel(x: np.ndarray) -> np.ndarray:
    """``(N_MELS, N_FRAMES)`` float32 log-mel of a 16 kHz mono signal (fit to ``N_SAMPLES``)."""
    x = fit_length(np.asarray(x, dtype=np.float32))
    spec = stft(x, N_FFT, HOP)  # (F, T)
    power = (spec.real ** 2 + spec.imag ** 2)[:, :N_FRAMES]
    mel = mel_filterbank() @ power
    return ((np.log(mel + 1e-6) + 6.0) / 4.0).astype(np.float32)
