"""Short-time Fourier transform of multichannel audio.

Definition (one channel ``x[n]``, window ``w``, length ``nfft``, hop ``H``)::

    X[f, t] = sum_{n=0}^{nfft-1} w[n] x[t H + n] exp(-j 2 pi f n / nfft),   f = 0 .. nfft/2

``w`` is the *periodic* Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / nfft)`` (it overlap-adds
to a constant at hop nfft/2). Only frames lying fully inside the signal are produced:
``T = 1 + (N - nfft) // H`` (0 when ``N < nfft``), so no padding ever leaks into the spectra.
Bin ``f`` is at ``f * fs / nfft`` Hz (see :func:`stft_freqs`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as _sfft


@lru_cache(maxsize=16)
def hann_periodic(nfft: int) -> np.ndarray:
    """Periodic Hann window of length ``nfft`` (float32, read-only)."""
    n = np.arange(nfft)
    w = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / nfft)).astype(np.float32)
    w.setflags(write=False)
    return w


def n_frames(n_samples: int, nfft: int, hop: int) -> int:
    """Number of frames fully inside a signal of ``n_samples``."""
    return 0 if n_samples < nfft else 1 + (n_samples - nfft) // hop


def stft_freqs(nfft: int, fs: float) -> np.ndarray:
    """Centre frequency (Hz) of each of the ``nfft // 2 + 1`` bins."""
    return np.arange(nfft // 2 + 1) * (float(fs) / nfft)


def _frame_spectra(x: np.ndarray, nfft: int, hop: int) -> np.ndarray:
    """``(M, T, nfft // 2 + 1)`` complex64 spectra of the frames of ``x`` ``(M, N)``."""
    nfft = int(nfft)
    hop = int(hop)
    if nfft <= 0 or hop <= 0:
        raise ValueError(f"nfft and hop must be positive, got {nfft}, {hop}")
    if x.ndim != 2:
        raise ValueError(f"x must be (n_channels, n_samples), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    m, n = x.shape
    t = n_frames(n, nfft, hop)
    if t == 0:
        return np.zeros((m, 0, nfft // 2 + 1), dtype=np.complex64)
    # (M, T, nfft) strided view of the frames; no copy until the window multiply.
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(m, t, nfft), strides=(x.strides[0], hop * x.strides[1], x.strides[1]),
        writeable=False)
    return _sfft.rfft(frames * hann_periodic(nfft), n=nfft, axis=-1)  # float32 -> complex64


def stft(x: np.ndarray, nfft: int, hop: int) -> np.ndarray:
    """STFT of ``x`` ``(M, N)`` (or ``(N,)``) -> ``(M, nfft // 2 + 1, T)`` complex64.

    Periodic Hann window, frames fully inside the signal (``T`` may be 0). A 1-D input gives
    ``(F, T)``.
    """
    x = np.asarray(x)
    squeeze = x.ndim == 1
    spec = _frame_spectra(x[None] if squeeze else x, nfft, hop)
    out = np.ascontiguousarray(spec.transpose(0, 2, 1), dtype=np.complex64)
    return out[0] if squeeze else out


def window_spectra(window, nfft: int, hop: int) -> np.ndarray:
    """Frame spectra ``(M, T, nfft // 2 + 1)`` complex64 of an :class:`~.types.AudioWindow`
    (1-D samples count as one channel): the layout the VAD and the DoA estimator read. The
    Pipeline computes it once per step and hands it to both. Read-only: callers slice it.
    """
    x = np.asarray(window.samples)
    spec = _frame_spectra(x[None] if x.ndim == 1 else x, nfft, hop)
    spec.setflags(write=False)
    return spec
