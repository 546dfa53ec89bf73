"""Direction-of-arrival estimation for a small microphone array (far field, free field model).

Conventions (docs/ARCHITECTURE.md, core/types.py): array frame REP-103 (x forward, y left,
z up), azimuth ``az`` counter-clockwise from +x, elevation ``el`` up from the x-y plane, radians;
the direction of a source is the unit vector ``u = [cos el cos az, cos el sin az, sin el]``
pointing from the array to the source. Mic ``m`` sits at ``p_m`` (metres).

Signal model
------------
A far-field source ``s(t)`` in direction ``u`` reaches mic ``m`` at ``t_m = t_0 - p_m . u / c``,
so in the STFT domain (``X_m[f, t]``, bin frequency ``f`` in Hz, see core/stft.py)::

    X_m(f) = S(f) exp(-j 2 pi f t_0) a_m(f, u),      a_m(f, u) = exp(+j 2 pi f p_m . u / c)

``a(f, u)`` is the steering vector. The time difference of arrival (TDOA) of pair ``(i, j)`` is
``tau_ij(u) = t_i - t_j = (p_j - p_i) . u / c``: positive when the sound reaches mic ``j`` first.
The cross-spectrum of a pair is ``X_i X_j^* = |S|^2 exp(-j 2 pi f tau_ij(u))``.

Estimators
----------
* :func:`gcc_phat` -- generalised cross-correlation with phase transform of one pair (Knapp &
  Carter 1976)::

      R_ij(tau) = IFFT{ X_i(f) X_j^*(f) / |X_i(f) X_j^*(f)| }(tau),   tau_hat = argmax R_ij

  which peaks at ``tau_ij``.
* :func:`srp_phat_map` -- steered response power with phase transform (DiBiase 2000): the sum
  over pairs of the GCC-PHAT functions read at the TDOAs a direction predicts, i.e. with the
  frame-averaged PHAT cross-spectra ``Psi_ij(f) = < X_i X_j^* / |X_i X_j^*| >_t``::

      P(u) = 1/(|pairs| |F|) sum_{i<j} sum_f Re{ Psi_ij(f) exp(+j 2 pi f tau_ij(u)) }  in [-1, 1]

  computed for the whole grid as one real matrix product (no loop over grid or frequency).
* :func:`music_map` -- broadband incoherent MUSIC (Schmidt 1986): per bin the spatial
  covariance ``R_f = < x x^H >_t`` is eigendecomposed, the ``M - K`` eigenvectors of the
  smallest eigenvalues span the noise subspace ``E_n(f)`` and::

      P(u) = sum_f  p_f(u) / max_u p_f(u),    p_f(u) = |a|^2 / || E_n(f)^H a(f, u) ||^2

  (each bin normalised to its maximum before summing, as in NormMUSIC, so that a few loud
  bins cannot dominate).
* :class:`DoaEstimator` -- what the pipeline runs: onset- and SNR-weighted time-frequency
  cells, recursive smoothing over windows, then SRP-PHAT or diffuse-whitened MUSIC; see its
  docstring for the maths and why. Its per-band loops (cell weights, band covariances, the
  subspace update, the MUSIC map, beam shares) run as compiled kernels (core/kernels.py):
  with 4 x 4 matrices per band the numpy calls' overhead, not the arithmetic, set the cost.
* :func:`find_peaks` -- 2-D local maxima with azimuth wrap-around, greedy non-maximum
  suppression by great-circle distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as _sfft

from . import kernels
from .geometry import SPEED_OF_SOUND_M_S, MicArray
from .stft import n_frames, window_spectra
from .types import AudioWindow, DoaPeak

_TWO_PI = 2.0 * np.pi


# --------------------------------------------------------------------------------------------
# search grid
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DirectionGrid:
    """Regular azimuth x elevation search grid (radians, both ascending).

    Azimuths cover ``[-pi, pi)`` in equal steps (so +-180 deg is the first column and wraps to
    the last); elevations are a closed range. ``unit_vectors`` is ``(n_el, n_az, 3)``.
    """

    azimuths: np.ndarray
    elevations: np.ndarray

    def __post_init__(self):
        az = np.asarray(self.azimuths, dtype=np.float64).ravel()
        el = np.asarray(self.elevations, dtype=np.float64).ravel()
        if az.size < 1 or el.size < 1:
            raise ValueError("grid needs at least one azimuth and one elevation")
        if np.any(np.diff(az) <= 0) or np.any(np.diff(el) <= 0):
            raise ValueError("grid azimuths and elevations must be strictly ascending")
        ce = np.cos(el)[:, None]
        u = np.stack([ce * np.cos(az)[None, :], ce * np.sin(az)[None, :],
                      np.broadcast_to(np.sin(el)[:, None], (el.size, az.size))], axis=-1)
        for a in (az, el, u):
            a.setflags(write=False)
        object.__setattr__(self, "azimuths", az)
        object.__setattr__(self, "elevations", el)
        object.__setattr__(self, "_unit_vectors", u)
        wraps = az.size >= 3 and bool(np.allclose(np.diff(az), _TWO_PI / az.size, atol=1e-9)) \
            and bool(np.isclose(az[0] + _TWO_PI - az[-1], _TWO_PI / az.size, atol=1e-9))
        object.__setattr__(self, "_wraps", wraps)

    @property
    def unit_vectors(self) -> np.ndarray:
        """``(n_el, n_az, 3)`` unit direction vectors."""
        return self._unit_vectors

    @property
    def shape(self) -> tuple[int, int]:
        return (self.elevations.size, self.azimuths.size)

    def nearest_index(self, azimuth: float, elevation: float) -> int:
        """Flat index (``el_index * n_az + az_index``) of the grid direction nearest to
        ``(azimuth, elevation)`` (azimuth wrapped when the grid covers the full circle)."""
        az, el = self.azimuths, self.elevations
        if self._wraps:
            ia = int(round((azimuth - az[0]) / self.azimuth_step)) % az.size
        else:
            ia = int(np.argmin(np.abs(az - azimuth)))
        ie = 0 if el.size == 1 else int(np.argmin(np.abs(el - elevation)))
        return ie * az.size + ia

    @property
    def azimuth_step(self) -> float:
        return _TWO_PI / self.azimuths.size

    @property
    def azimuth_wraps(self) -> bool:
        """True when the azimuths cover the full circle in equal steps (they wrap)."""
        return self._wraps

    @classmethod
    def azimuth_only(cls, step_deg: float = 2.0, elevation_deg: float = 0.0) -> "DirectionGrid":
        """One ring: azimuths ``-180, -180 + step, ...`` deg at elevation ``elevation_deg``.

        Why a ring above the horizon (``doa.azimuth_only_elevation_deg``): a planar array
        measures ``cos(el) (p_ij . u_horizontal)`` - in-plane delays shrink with elevation - and
        it cannot resolve the elevation itself. A talker's mouth is usually above the array
        (robot or table height), and the floor and ceiling reflections reach the array with the
        same azimuth at larger |elevation|, so the delays observed are those of a direction well
        above the horizon. Steering the ring there fits them (held-back tuning scenes, 0 ->
        30 deg: one talker top-1 ACC@10 0.992 -> 0.994, two talkers top-2 0.803 -> 0.851, three
        walking talkers MOTA 0.770 -> 0.802, IDF1 0.726 -> 0.747; talkers' true elevations
        there: median 12, 90th percentile 28 deg). The azimuth is what is estimated; the
        elevation reported with it is the ring's.
        """
        n = max(3, int(round(360.0 / float(step_deg))))
        el = float(elevation_deg)
        if not -90.0 < el < 90.0:
            raise ValueError(f"the azimuth-only ring needs -90 < elevation < 90 deg, got {el}")
        return cls(-np.pi + _TWO_PI * np.arange(n) / n, np.array([np.deg2rad(el)]))

    @classmethod
    def sphere(cls, az_step_deg: float = 2.0, el_step_deg: float = 10.0,
               el_min_deg: float = -20.0, el_max_deg: float = 80.0) -> "DirectionGrid":
        """Azimuth circle x elevations ``el_min, el_min + step, ... <= el_max`` (deg)."""
        n = max(3, int(round(360.0 / float(az_step_deg))))
        lo, hi = float(el_min_deg), float(el_max_deg)
        if not -90.0 <= lo <= hi <= 90.0:
            raise ValueError(f"need -90 <= el_min <= el_max <= 90, got {lo}, {hi}")
        k = int(np.floor((hi - lo) / float(el_step_deg) + 1e-9))
        el = lo + float(el_step_deg) * np.arange(k + 1)
        return cls(-np.pi + _TWO_PI * np.arange(n) / n, np.deg2rad(el))

    @classmethod
    def from_params(cls, params: dict) -> "DirectionGrid":
        """From ``doa.azimuth_resolution_deg``, ``doa.azimuth_only`` and its ring's
        ``doa.azimuth_only_elevation_deg`` or, for the sphere, ``doa.elevation_resolution_deg``,
        ``doa.min_elevation_deg``, ``doa.max_elevation_deg`` (the full parameter dict, as
        ``params.load_params`` returns it)."""
        az_step = float(params["doa.azimuth_resolution_deg"])
        if bool(params["doa.azimuth_only"]):
            return cls.azimuth_only(az_step, float(params["doa.azimuth_only_elevation_deg"]))
        return cls.sphere(az_step, float(params["doa.elevation_resolution_deg"]),
                          float(params["doa.min_elevation_deg"]),
                          float(params["doa.max_elevation_deg"]))


def _pair_tdoas(mic_positions: np.ndarray, grid: DirectionGrid, c: float) -> np.ndarray:
    """``tau[p, g] = (p_j - p_i) . u_g / c`` for pairs ``i < j`` (P, n_el * n_az), seconds."""
    pos = np.asarray(mic_positions, dtype=np.float64)
    i, j = np.triu_indices(pos.shape[0], k=1)
    u = grid.unit_vectors.reshape(-1, 3)
    return (pos[j] - pos[i]) @ u.T / float(c)


def _band(freqs: np.ndarray, freq_range) -> np.ndarray:
    f = np.asarray(freqs, dtype=np.float64)
    keep = f > 0
    if freq_range is not None:
        keep &= (f >= freq_range[0]) & (f <= freq_range[1])
    return np.flatnonzero(keep)


# --------------------------------------------------------------------------------------------
# GCC-PHAT
# --------------------------------------------------------------------------------------------
def gcc_phat(x_i: np.ndarray, x_j: np.ndarray, fs: float, max_tau: float | None = None,
             interp: int = 16) -> tuple[float, np.ndarray]:
    """GCC-PHAT time difference ``tau = t_i - t_j`` (seconds) between two signals.

    ``tau > 0`` means ``x_i`` is a delayed copy of ``x_j`` (the sound reached mic ``j`` first),
    matching ``tau_ij(u) = (p_j - p_i) . u / c``. The correlation is computed with zero padding
    (no circular wrap) and upsampled ``interp`` times by zero-padding the spectrum; the peak is
    then refined by a parabola through its neighbours.

    Returns ``(tau, cc)``: ``cc`` is the PHAT correlation at lags ``-L .. L`` (step
    ``1 / (interp fs)``), ``L = max_tau * fs * interp`` when ``max_tau`` is given.
    """
    a = np.asarray(x_i, dtype=np.float64).ravel()
    b = np.asarray(x_j, dtype=np.float64).ravel()
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("gcc_phat: the signals contain NaN or Inf")
    n = a.size + b.size
    nfft = 1 << int(np.ceil(np.log2(max(n, 2))))
    A = _sfft.rfft(a, nfft)
    B = _sfft.rfft(b, nfft)
    G = A * np.conj(B)
    G /= np.abs(G) + 1e-12 * (np.abs(G).max() + 1e-30)
    interp = max(1, int(interp))
    cc = _sfft.irfft(G, nfft * interp)
    max_shift = (nfft * interp) // 2
    if max_tau is not None:
        max_shift = min(int(np.ceil(float(max_tau) * fs * interp)), max_shift)
    cc = np.concatenate((cc[-max_shift:], cc[:max_shift + 1])) if max_shift > 0 else cc[:1]
    k = int(np.argmax(cc))
    shift = float(k - max_shift)
    if 0 < k < cc.size - 1:
        y0, y1, y2 = cc[k - 1], cc[k], cc[k + 1]
        den = y0 - 2.0 * y1 + y2
        if den < 0:
            shift += 0.5 * (y0 - y2) / den
    return shift / (interp * float(fs)), cc


# --------------------------------------------------------------------------------------------
# SRP-PHAT and MUSIC maps
# --------------------------------------------------------------------------------------------
def srp_phat_steering(freqs: np.ndarray, mic_positions: np.ndarray, grid: DirectionGrid,
                      c: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """Real steering matrix ``W (2 P F, G)`` float32 so that ``[Re Psi, Im Psi] @ W`` is the
    SRP-PHAT sum: rows ``cos(2 pi f tau_p(u))`` then ``-sin(2 pi f tau_p(u))``, pair-major."""
    tau = _pair_tdoas(mic_positions, grid, c)  # (P, G)
    phase = _TWO_PI * np.asarray(freqs, dtype=np.float64)[None, :, None] * tau[:, None, :]
    p, f, g = phase.shape
    return np.concatenate([np.cos(phase).reshape(p * f, g),
                           -np.sin(phase).reshape(p * f, g)], axis=0).astype(np.float32)


def phat_cross_spectra(X: np.ndarray) -> np.ndarray:
    """PHAT-weighted cross-spectra ``X_i X_j^* / |X_i X_j^*|`` of all pairs ``i < j``:
    ``X (M, F, T)`` -> ``(P, F, T)`` complex64."""
    m = X.shape[0]
    i, j = np.triu_indices(m, k=1)
    C = X[i] * np.conj(X[j])
    C /= np.abs(C) + np.float32(1e-20)
    return C


def srp_phat_map(X: np.ndarray, freqs: np.ndarray, mic_positions: np.ndarray,
                 grid: DirectionGrid, c: float = SPEED_OF_SOUND_M_S,
                 freq_range: tuple[float, float] | None = None) -> np.ndarray:
    """SRP-PHAT map ``(n_el, n_az)`` in ``[-1, 1]`` from an STFT ``X (M, F, T)``.

    ``freqs`` are the bin frequencies of ``X`` in Hz; bins outside ``freq_range`` (and DC) are
    ignored. ``P(u) = mean_{pairs, f} Re{Psi_ij(f) exp(+j 2 pi f tau_ij(u))}`` with
    ``Psi_ij`` the frame average of the PHAT cross-spectra (see the module docstring).
    """
    X = np.asarray(X)
    k = _band(freqs, freq_range)
    if X.ndim != 3 or X.shape[2] == 0 or k.size == 0:
        return np.zeros(grid.shape)
    psi = phat_cross_spectra(X[:, k, :]).mean(axis=2)  # (P, F)
    W = srp_phat_steering(np.asarray(freqs)[k], mic_positions, grid, c)
    v = np.concatenate([psi.real.ravel(), psi.imag.ravel()]).astype(np.float32)
    return (v @ W / psi.size).reshape(grid.shape).astype(np.float64)


def steering_vectors(freqs: np.ndarray, mic_positions: np.ndarray, grid: DirectionGrid,
                     c: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """``a[f, m, g] = exp(+j 2 pi f p_m . u_g / c)`` -> ``(F, M, G)`` complex128."""
    pos = np.asarray(mic_positions, dtype=np.float64)
    d = pos @ grid.unit_vectors.reshape(-1, 3).T / float(c)  # (M, G) seconds of advance
    return np.exp(1j * _TWO_PI * np.asarray(freqs, dtype=np.float64)[:, None, None] * d[None])


def music_map(X: np.ndarray, freqs: np.ndarray, mic_positions: np.ndarray,
              grid: DirectionGrid, n_sources: int, c: float = SPEED_OF_SOUND_M_S,
              freq_range: tuple[float, float] | None = None) -> np.ndarray:
    """Broadband incoherent (normalised) MUSIC pseudo-spectrum ``(n_el, n_az)``, max 1.

    ``n_sources`` (``K``) is clipped to ``1 .. M - 1``; see the module docstring.
    """
    X = np.asarray(X)
    k = _band(freqs, freq_range)
    if X.ndim != 3 or X.shape[2] == 0 or k.size == 0:
        return np.zeros(grid.shape)
    m = X.shape[0]
    ns = int(min(max(int(n_sources), 1), m - 1))
    Xb = X[:, k, :].astype(np.complex128).transpose(1, 0, 2)  # (F, M, T)
    R = Xb @ np.conj(Xb.transpose(0, 2, 1)) / Xb.shape[2]  # (F, M, M)
    _, vecs = np.linalg.eigh(R)  # ascending eigenvalues
    En = vecs[:, :, : m - ns]  # (F, M, M - K)
    A = steering_vectors(np.asarray(freqs)[k], mic_positions, grid, c)  # (F, M, G)
    B = np.conj(En.transpose(0, 2, 1)) @ A  # (F, M - K, G)
    den = np.einsum("fkg,fkg->fg", B.real, B.real) + np.einsum("fkg,fkg->fg", B.imag, B.imag)
    p = m / np.maximum(den, 1e-12)
    p /= p.max(axis=1, keepdims=True)
    out = p.sum(axis=0)
    return (out / max(out.max(), 1e-30)).reshape(grid.shape)


# --------------------------------------------------------------------------------------------
# peak picking
# --------------------------------------------------------------------------------------------
def find_peaks(doa_map: np.ndarray, grid: DirectionGrid, max_sources: int = 3,
               min_separation_rad: float = float(np.deg2rad(20.0)),
               min_rel_height: float = 0.3) -> list[DoaPeak]:
    """Peaks of a DoA map, strongest first.

    A cell is a candidate when it is >= its 8 neighbours (azimuth wraps around when the grid
    covers the full circle; elevation does not) and > the ones before it (a plateau gives one
    peak). Its relative height ``h = (v - min) / (max - min)`` must be >= ``min_rel_height``;
    candidates are accepted greedily by height when they lie at least ``min_separation_rad``
    (great circle) from every accepted peak, up to ``max_sources``. Positions are refined by a
    parabola through the neighbours in azimuth (and in elevation where there are two). The
    confidence is ``h``: 1 for the main peak, the height of a secondary peak relative to the
    main one above the map's floor.
    """
    m = np.asarray(doa_map)
    n_el, n_az = grid.shape
    if m.size != n_el * n_az or max_sources <= 0:
        return []
    wraps = grid.azimuth_wraps
    az_step = _TWO_PI / n_az if wraps else (
        float(np.mean(np.diff(grid.azimuths))) if n_az > 1 else 0.0)
    el_step = float(np.mean(np.diff(grid.elevations))) if n_el > 1 else 0.0
    rows = kernels.map_peaks(m.reshape(n_el, n_az), grid.unit_vectors, grid.azimuths,
                             grid.elevations, wraps, int(max_sources),
                             math.cos(min_separation_rad), float(min_rel_height), az_step, el_step)
    return [DoaPeak(azimuth=az, elevation=el, confidence=conf) for az, el, conf in rows.tolist()]


# --------------------------------------------------------------------------------------------
# the estimator the pipeline runs
# --------------------------------------------------------------------------------------------
# Time-frequency cell weighting (module constants, tuned on simulated 4-mic ReSpeaker rooms,
# RT60 0.2-0.9 s, SNR 5-30 dB, real speech; see benchmarks/bench_doa_vs_pyroomacoustics.py).
ONSET_MAX_DB = 10.0  # onset weight = clip(rise of the cell's level over the previous frame, 0, this)
SNR_EXPONENT = 0.5  # SNR weight = (a-posteriori SNR - 1)^this, noise floor tracked per bin
NOISE_MIN_BIAS = 1.6  # the minimum over a window's frames underestimates the noise PSD by ~this
NOISE_RISE_DB_S = 3.0  # how fast the tracked noise floor may rise (it falls at once)
MAX_GAP_S = 2.0  # a stamp gap longer than this (or a step back in time) resets the smoothing
DIFFUSE_LOADING = 0.05  # MUSIC pre-whitening: Gamma_f = sinc(2 f d_ij / c) + this * I
BINS_PER_BAND = 2  # MUSIC: adjacent STFT bins (Hann: overlapping) pooled into one covariance
ACTIVITY_BIN_STRIDE = 4  # peak_activity reads every 4th band bin (Hann bins overlap anyway)
assert ACTIVITY_BIN_STRIDE % BINS_PER_BAND == 0  # peak_activity reads MUSIC's band covariances
MIN_FRAME_POWER = 1e-13  # mean |X|^2 per bin below this = digital silence (about -150 dBFS)


class DoaEstimator:
    """Direction of arrival for one :class:`AudioWindow` at a time (stateful, causal).

    ``estimate(window)`` returns the DoA map (``(n_el, n_az)`` float32, min-max normalised to
    ``[0, 1]``) on :attr:`grid` and its peaks (:func:`find_peaks` with ``doa.max_sources``,
    ``doa.min_peak_separation_deg``, ``doa.min_peak_confidence``). Windows of one stream must
    come in time order; the smoothing state is reset when the stamps step back or jump by more
    than ``MAX_GAP_S``. ``doa.method``:

    ``music`` (recommended; needed for two simultaneous talkers)
        Diffuse-whitened broadband MUSIC on a weighted, recursively smoothed covariance. Per
        band ``f`` of ``BINS_PER_BAND`` adjacent STFT bins (pooling them doubles the snapshots
        per covariance and halves the per-band work; their steering vectors differ by < 0.04 rad
        in phase): ``R_f = sum_windows a^age sum_{t, bins} w[f, t] y_ft y_ft^H`` with
        ``y = L_f^-1 x`` (``L_f`` of the band's first bin, where it is steered; whitening each
        bin with its own cost ~3 % more of the whole step and was no more accurate on the
        tuning scenes) whitened against the diffuse-field coherence
        ``Gamma_f = L_f L_f^H = sinc(2 f |p_i - p_j| / c) + 0.05 I`` (diffuse noise and late
        reverberation become white, so they stop producing the array's axis-aligned
        pseudo-peaks). ``Q_f``: the ``K = min(doa.max_sources, M - 2)`` dominant eigenvectors
        (exact ``eigh`` after a reset, then one warm-started orthogonal iteration per
        window). With whitened steering vectors ``b = L^-1 a``::

            d_f(u) = |b|^2 - ||Q_f^H b||^2,     p_f(u) = |b|^2 / d_f(u)    (MUSIC)
            P(u)   = sum_f  log(1 + lambda_sig(f) / lambda_noise(f))  p_f(u) / max_u p_f

        i.e. NormMUSIC with each bin weighted by how much of its (whitened) power lies in the
        signal subspace. ``|b|^2`` and ``||Q^H b||^2`` are quadratic forms
        ``a^H S a = tr S + 2 sum_{i<j} Re{S_ij exp(+j 2 pi f tau_ij(u))}`` evaluated with the
        same precomputed real steering matrix as SRP (:func:`kernels.normmusic_map`).
    ``srp_phat`` (good for one talker in moderate rooms; ~0.45 ms a window with the STFT, about
    what MUSIC costs)
        SRP-PHAT (module docstring) over the weighted, smoothed PHAT cross-spectra
        ``Psi_ij(f) = sum_windows a^age sum_t w[f, t] X_i X_j^* / |X_i X_j^*|``: one product of
        ``[Re Psi, Im Psi]`` with the steering matrix.

    Why (tuned on simulated ReSpeaker 4-mic rooms, RT60 0.2-0.9 s, SNR 5-30 dB, real speech;
    see benchmarks/bench_doa_vs_pyroomacoustics.py for the comparison numbers):

    * Cell weights ``w[f, t] = onset * snr``. *Onset*: ``clip(L[f, t] - L[f, t-1], 0, 10 dB)``
      of the mean-over-mics level; direct sound leads its reverberation, so rising cells are
      direct-path dominated (precedence effect); this is what keeps RT60 0.9 s usable.
      *SNR*: ``(P / N - 1)^0.5`` with ``N`` a per-bin noise floor (minimum statistics, rises at
      most 3 dB/s); plain PHAT gives noise-only bins the same say as speech bins.
    * Recursive smoothing over windows, time constant ``doa.smoothing_s`` (``a = exp(-dt /
      tau)`` from the stamps): one 0.256 s window of a 64 mm aperture in a reverberant room is
      too little evidence (two static talkers, published top-2 peaks ACC@10 0.79 at 0.05 s,
      0.80 at 0.15 s, 0.82 at 0.5 s, horizontal ring). The price is memory: a walking talker
      is reported behind, and after a turn change the previous talker stays on the map
      (three-talker MOTA 0.78 at 0.15 s, 0.71 at 0.5 s, even with :meth:`peak_activity`
      ranking, measured before bands of 2 bins). The default 0.15 s is the compromise (tuning
      seeds 0-23); 0 = memoryless.
    * Two simultaneous talkers: SRP lobes of a 64 mm aperture are 60-90 deg wide, so the
      weaker talker's peak is pushed 15-30 deg off by the stronger one's lobe or vanishes in
      it (ACC@10 ~0.45-0.55, scored then with any of up to 3 peaks). Per-cell direction voting
      (W-disjoint orthogonality), coherence bin selection and matching-pursuit deflation of the
      SRP map were tried; MUSIC, whose noise-subspace nulls add no lobes, did best (RAP-MUSIC
      deflation of the first talker was tried too: its imperfectly removed residue leaves
      mirror ghosts, two-talker top-2 ACC@10 0.80 -> 0.63). Bins up to ~7.5 kHz
      (``doa.freq_max_hz``) add ~+0.05-0.1 ACC@10 for both methods (narrower lobes; fricatives
      carry energy there).
    """

    def __init__(self, mic_array: MicArray, params: dict):
        """``params``: the full parameter dict (``params.defaults()`` overlaid, as
        ``load_params`` returns it); the defaults live in ``params.PARAMETERS`` only."""
        self.mic_array = mic_array
        self.params = dict(params)
        p = self.params
        self.method = str(p["doa.method"]).lower()
        if self.method not in ("srp_phat", "music"):
            raise ValueError(f"doa.method must be 'srp_phat' or 'music', got {self.method!r}")
        self.nfft = int(p["audio.nfft"])
        self.hop = int(p["audio.hop"])
        self.c = float(p["speed_of_sound"])
        self.freq_range = (float(p["doa.freq_min_hz"]), float(p["doa.freq_max_hz"]))
        self.max_sources = int(p["doa.max_sources"])
        self.min_separation = float(np.deg2rad(float(p["doa.min_peak_separation_deg"])))
        self.min_rel_height = float(p["doa.min_peak_confidence"])
        self.smoothing_s = float(p["doa.smoothing_s"])
        self.grid = DirectionGrid.from_params(p)
        m = mic_array.n_mics
        self.n_sources = int(max(1, min(self.max_sources, m - 2)))
        self._pi, self._pj = np.triu_indices(m, k=1)
        self._fs = None
        self.freqs = None  # Hz of the bins used; set with the sample rate
        self.reset()
        kernels.warm_up()  # compile (or load) now, not on the first audio window
        fs = int(p.get("sample_rate") or 0)  # 0 = "from AudioInfo": set up on the first window
        if fs > 0:
            self._setup(fs)

    # -- set-up --------------------------------------------------------------------------
    def _setup(self, fs: int) -> None:
        """Band-limited bins and the real steering matrix ``W (F, 2P, G)`` for rate ``fs``."""
        self._fs = int(fs)
        freqs = np.arange(self.nfft // 2 + 1) * (self._fs / self.nfft)
        lo, hi = self.freq_range
        bins = np.flatnonzero((freqs > 0) & (freqs >= lo) & (freqs <= min(hi, 0.5 * self._fs)))
        if bins.size == 0:
            raise ValueError(f"no STFT bin in doa.freq_min_hz..doa.freq_max_hz = {lo}..{hi} Hz "
                             f"at {fs} Hz, nfft {self.nfft}")
        # the band is a contiguous run of bins: slicing the spectra avoids a gather + copy
        self._band = slice(int(bins[0]), int(bins[-1]) + 1)
        self.freqs = freqs[bins]
        tau = _pair_tdoas(self.mic_array.positions, self.grid, self.c)  # (P, G)
        phase = _TWO_PI * self.freqs[:, None, None] * tau[None, :, :]  # (F, P, G)
        self._W = np.ascontiguousarray(
            np.concatenate([np.cos(phase), -np.sin(phase)], axis=1), dtype=np.float32)
        self._W_flat = self._W.reshape(-1, self._W.shape[2])
        # MUSIC pre-whitening against a diffuse (spherically isotropic) field: noise and late
        # reverberation have inter-mic coherence Gamma_f; with Gamma_f = L L^H the whitened
        # covariance is L^-1 R L^-H and the whitened steering vector L^-1 a.
        pos = self.mic_array.positions
        dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
        m = pos.shape[0]
        gamma = (np.sinc(2.0 * self.freqs[:, None, None] * dist[None] / self.c)
                 + DIFFUSE_LOADING * np.eye(m)[None])
        self._Linv = np.linalg.inv(np.linalg.cholesky(gamma)).astype(np.complex64)  # (F, M, M)
        LinvH = np.conj(self._Linv.transpose(0, 2, 1))
        gi = np.linalg.inv(gamma)  # real symmetric
        v = np.concatenate([gi[:, self._pi, self._pj], np.zeros((gi.shape[0], self._pi.size))],
                           axis=1).astype(np.float32)[:, None, :]
        # |L^-1 a(u)|^2 = a^H Gamma^-1 a = tr(Gamma^-1) + 2 sum_{i<j} Gamma^-1_ij cos(2 pi f tau_ij)
        self._anorm = (np.trace(gi, axis1=1, axis2=2)[:, None]
                       + 2.0 * (v @ self._W)[:, 0, :]).astype(np.float32)  # (F, G)
        # MUSIC bands: BINS_PER_BAND adjacent bins summed, steered at the band's first bin
        # (over 31 Hz the steering phase of a 6.5 cm aperture moves < 0.04 rad)
        g = self._bins_per_band = min(BINS_PER_BAND, self.freqs.size)
        first = slice(0, (self.freqs.size // g) * g, g)
        self._band_W = np.ascontiguousarray(self._W[first])
        self._band_anorm = np.ascontiguousarray(self._anorm[first])
        self._band_anorm_floor = np.float32(1e-6) * self._band_anorm  # floor of d_f(u)
        self._band_LinvH = np.ascontiguousarray(LinvH[first])
        self._band_Linv = np.ascontiguousarray(self._Linv[first])
        # L^-1 a of every grid direction (F, M, G), for peak_activity's beams
        self._whitened_steering = (self._Linv.astype(np.complex128) @ steering_vectors(
            self.freqs, pos, self.grid, self.c)).astype(np.complex64)
        self.reset()

    def reset(self) -> None:
        """Forget the smoothing state and the noise floor."""
        self._acc = None  # smoothed PHAT cross-spectra (F, 2P) or covariances (F, M, M)
        self._Q = None  # tracked signal subspace (F, M, K)
        self._noise = None  # per-bin noise PSD (F,)
        self._last_stamp = None
        self._current = None  # (band spectra, cell weights) of the newest window
        self._current_cov = None  # MUSIC: its whitened band covariances (F / g, M, M)

    # -- main entry ----------------------------------------------------------------------
    def estimate(self, window: AudioWindow,
                 spectra: np.ndarray | None = None) -> tuple[np.ndarray, list[DoaPeak]]:
        """DoA map ``(n_el, n_az)`` float32 in ``[0, 1]`` and its peaks, strongest first.

        ``spectra``: ``stft.window_spectra(window, audio.nfft, audio.hop)`` when the caller
        already computed them (the Pipeline shares one STFT between the VAD and this)."""
        x = np.asarray(window.samples)
        if x.ndim != 2 or x.shape[0] != self.mic_array.n_mics:
            raise ValueError(f"expected ({self.mic_array.n_mics}, n) samples, got {x.shape}")
        if spectra is None and not np.isfinite(x.sum(dtype=np.float64)):
            # one NaN would stay in the smoothing; the Pipeline validates the window before it
            # shares its spectra, so the check runs once per step
            raise ValueError("the window contains NaN or Inf samples")
        if int(window.sample_rate) != self._fs:
            self._setup(int(window.sample_rate))
        empty = np.zeros(self.grid.shape, dtype=np.float32)
        if n_frames(x.shape[1], self.nfft, self.hop) < 2:
            return empty, []
        if spectra is None or spectra.shape[-1] != self.nfft // 2 + 1:
            spectra = window_spectra(window, self.nfft, self.hop)
        X = spectra[:, :, self._band]  # (M, T, F) band-limited, a read-only view
        w, dt = self._weights(X, int(window.stamp_ns))
        self._current, self._current_cov = (X, w), None
        decay = float(np.exp(-dt / self.smoothing_s)) if (self.smoothing_s > 0 and dt > 0) else 0.0
        if self.method == "music":
            raw = self._music(X, w, decay)
        else:
            raw = self._srp(X, w, decay)
        if raw is None:
            return empty, []
        lo, hi = float(raw.min()), float(raw.max())
        # min/max propagate NaN and reach +-Inf, so finite extremes mean a finite map
        if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
            return empty, []
        doa_map = ((raw - lo) / (hi - lo)).astype(np.float32).reshape(self.grid.shape)
        peaks = find_peaks(doa_map, self.grid, self.max_sources, self.min_separation,
                           self.min_rel_height)
        return doa_map, peaks

    def peak_activity(self, peaks) -> list[float]:
        """How much of the *newest window's* power comes from each peak's direction, in
        ``[0, 1]`` (the map itself is smoothed over windows, so after a turn change the
        previous talker's peak can stay the highest for a while; this says who is loud now).

        With ``C_f = L_f^-1 (sum_t w[f, t] x_ft x_ft^H) L_f^-H`` the whitened covariance of the
        window's weighted cells alone (no smoothing) and ``b = L^-1 a(u)`` the whitened steering
        vector of the grid direction nearest the peak::

            activity(u) = mean_f  b^H C_f b / (|b|^2 tr C_f)      (over bins with power)

        the share of the power that a (whitened) delay-and-sum beam towards ``u`` picks up: ~1
        for a lone talker in ``u`` at high SNR, ``1/M`` for white (diffuse) noise. ``b`` and
        ``|b|^2`` are precomputed for the grid, and only every ``ACTIVITY_BIN_STRIDE``-th bin is
        read (a coarse score needs no more; this runs every step): a few small products. With
        MUSIC, ``C_f`` is the window's band covariance starting at that bin (computed anyway).
        """
        if not peaks or self._current is None:
            return [0.0] * len(peaks)
        k = slice(None, None, ACTIVITY_BIN_STRIDE)
        if self._current_cov is not None:  # MUSIC computed it per band (first bins)
            C = self._current_cov[:: ACTIVITY_BIN_STRIDE // self._bins_per_band]
            k = slice(0, C.shape[0] * ACTIVITY_BIN_STRIDE, ACTIVITY_BIN_STRIDE)
        else:  # SRP-PHAT did not need it
            X, w = self._current
            C = kernels.whitened_band_covariances(X[:, :, k], np.ascontiguousarray(w[:, k]),
                                                  np.ascontiguousarray(self._Linv[k]), 1)
        cols = [self.grid.nearest_index(p.azimuth, p.elevation) for p in peaks]
        share = kernels.beam_power_share(C, np.ascontiguousarray(self._whitened_steering[k, :, cols]),
                                         np.ascontiguousarray(self._anorm[k, cols]),
                                         np.float32(1e-6))
        return [float(x) for x in share]

    # -- pieces --------------------------------------------------------------------------
    def _weights(self, X: np.ndarray, stamp_ns: int) -> tuple[np.ndarray, float]:
        """Cell weights ``(T, F)`` (onset x SNR) and the time since the previous window."""
        last = self._last_stamp
        dt = 0.0 if last is None else (stamp_ns - last) * 1e-9
        if last is not None and (dt <= 0.0 or dt > MAX_GAP_S):
            self._acc = None
            self._Q = None
            if dt <= 0.0:
                self._noise = None
            dt = 0.0
        self._last_stamp = stamp_ns
        # Frames of digital silence (zero-filled gaps) carry no information and must not pull
        # the noise floor to zero: they get weight 0 and stay out of the minimum.
        pw, valid, wmin = kernels.cell_power(X, np.float32(NOISE_MIN_BIAS),
                                             np.float32(MIN_FRAME_POWER))
        if valid.any():  # per-bin noise floor: minimum statistics with a bounded rise rate
            wmin += np.float32(1e-20)
            if self._noise is None:
                self._noise = wmin
            else:
                rise = np.float32(10.0 ** (NOISE_RISE_DB_S * dt / 10.0))
                self._noise = np.minimum(self._noise * rise, wmin)
        if self._noise is None:
            return np.zeros_like(pw), dt
        w = kernels.onset_snr_weights(pw, self._noise, valid, np.float32(ONSET_MAX_DB),
                                      np.float32(SNR_EXPONENT), np.float32(1e-20))
        return w, dt

    def _srp(self, X: np.ndarray, w: np.ndarray, decay: float) -> np.ndarray:
        C = X[self._pi] * np.conj(X[self._pj])  # (P, T, F)
        C *= w[None] / (np.abs(C) + np.float32(1e-20))
        psi = C.sum(axis=1)  # (P, F)
        v = np.concatenate([psi.real.T, psi.imag.T], axis=1)  # (F, 2P)
        if self._acc is not None and decay > 0.0:
            v += decay * self._acc
        self._acc = v
        return v.ravel() @ self._W_flat

    def _music(self, X: np.ndarray, w: np.ndarray, decay: float) -> np.ndarray | None:
        m = X.shape[0]
        k = self.n_sources
        # this window's whitened covariance alone, per band of adjacent bins (twice the
        # snapshots, half the bands), whitened with the band's first bin (where it is also
        # steered); peak_activity reuses it
        self._current_cov = kernels.whitened_band_covariances(X, w, self._band_Linv,
                                                              self._bins_per_band)
        R = self._current_cov.copy()
        if self._acc is not None and decay > 0.0:
            R += np.complex64(decay) * self._acc
        else:
            self._Q = None
        self._acc = R
        tr = np.trace(R, axis1=1, axis2=2).real
        scale = float(tr.max()) if tr.size else 0.0
        if not scale > 0.0:
            return None
        load = np.float32(1e-6 * scale / m)  # diagonal loading: Rl = R + load I
        if self._Q is None:
            Rl = R.copy()
            diag = np.arange(m)
            Rl[:, diag, diag] += load
            lam, vecs = np.linalg.eigh(Rl)
            Q = np.ascontiguousarray(vecs[:, :, m - k:], dtype=np.complex64)
            lam_sig = lam[:, m - k:].sum(axis=1)
        else:  # one orthogonal (subspace) iteration from the previous window's subspace
            Q, lam_sig = kernels.subspace_iteration(R, self._Q, load)
        self._Q = Q
        ratio = np.maximum(lam_sig, 0.0) / (np.maximum(tr - lam_sig, 0.0) + 1e-9 * scale)
        wf = np.log1p(ratio).astype(np.float32)
        # ||Q^H L^-1 a||^2 = a^H S a with S = L^-H Q Q^H L^-1, in pair form; the per-band
        # normalisation sum_f wf p_f / max_u p_f is folded into the kernel
        return kernels.normmusic_map(Q, self._band_LinvH, self._band_W, self._band_anorm,
                                     self._band_anorm_floor, wf, self._pi, self._pj)
