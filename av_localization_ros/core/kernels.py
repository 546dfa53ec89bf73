"""Compiled (numba) kernels for the per-window hot path: the DoA estimator's per-band loops,
peak picking and the track filters' Kalman steps.

Why compiled: at 4 microphones every matrix in the DoA path is 4 x 4 or 4 x 2, one per
frequency band (~115 bands), and a track filter's is 4 x 4. Written as batched numpy calls, the
cost was the ~100 calls per window (each a few microseconds of dispatch and temporaries), not
the arithmetic; a plain loop in machine code does the same arithmetic several times faster (the
whole audio path 1.5x, ``benchmarks/bench_realtime.py``). The maths is in each kernel's
docstring and in :class:`~av_localization_ros.core.doa.DoaEstimator` /
:mod:`~av_localization_ros.core.tracker`.

Floating point: the DoA kernels work in single precision (the spectra are complex64), peak
picking and the Kalman steps in double. ``_FASTMATH`` allows reassociation and fused
multiply-add (so the inner loops vectorise) but keeps IEEE NaN / Inf semantics: non-finite
input must still come out non-finite, where the estimator catches it.

Compilation happens once per machine (``cache=True`` keeps the machine code on disk, next to
this file or in numba's per-user cache when that is read-only) and loading once per process;
:func:`warm_up` does both at start-up, so that the first audio window does not pay for them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=_FASTMATH)
def cell_power(X, min_bias, min_frame_power):
    """Mean power over the microphones of every STFT cell and its minimum over the frames.

    ``X (M, T, F)`` complex64. Returns ``pw (T, F)`` float32, ``pw[t, f] = mean_m |X_mtf|^2``;
    ``valid (T,)``: frames whose mean power over the bins exceeds ``min_frame_power`` (below
    it: digital silence, e.g. a zero-filled gap); and ``floor (F,)`` = ``min_bias x`` the
    minimum of ``pw`` over the valid frames (+inf in every bin when no frame is valid).
    """
    m, t, f = X.shape
    pw = np.zeros((t, f), np.float32)
    valid = np.empty(t, np.bool_)
    floor = np.full(f, np.inf, np.float32)
    inv_m = np.float32(1.0 / m)
    for s in range(t):
        for i in range(m):
            for k in range(f):
                x = X[i, s, k]
                pw[s, k] += x.real * x.real + x.imag * x.imag
        total = np.float32(0)
        for k in range(f):
            pw[s, k] *= inv_m
            total += pw[s, k]
        valid[s] = total > min_frame_power * f
        if valid[s]:
            for k in range(f):
                floor[k] = min(floor[k], pw[s, k])
    for k in range(f):
        floor[k] *= min_bias
    return pw, valid, floor


@njit(cache=True, fastmath=_FASTMATH)
def onset_snr_weights(pw, noise, valid, onset_max_db, snr_exponent, tiny):
    """Cell weights ``w[t, f] = (pw / noise - 1)_+ ^ snr_exponent x onset[t, f]`` ``(T, F)``
    float32, with ``onset[t, f] = clip(10 log10((pw[t, f] + tiny) / (pw[t-1, f] + tiny)), 0,
    onset_max_db)``: the rise of the cell's level over the previous frame, 0 for the first
    frame and wherever this frame or the previous one is not ``valid``."""
    t, f = pw.shape
    w = np.zeros((t, f), np.float32)
    half = snr_exponent == 0.5
    for s in range(1, t):
        if not (valid[s] and valid[s - 1]):
            continue
        for k in range(f):
            snr = pw[s, k] / noise[k] - np.float32(1.0)
            ratio = (pw[s, k] + tiny) / (pw[s - 1, k] + tiny)
            if not (snr > 0.0 and ratio > 1.0):  # no SNR or no rise: weight 0, skip the log
                continue
            onset = min(np.float32(10.0) * np.log10(ratio), onset_max_db)
            w[s, k] = (np.sqrt(snr) if half else snr ** snr_exponent) * onset
    return w


@njit(cache=True, fastmath=_FASTMATH)
def whitened_band_covariances(X, w, Linv, bins_per_band):
    """``C_b = A_b (sum_{f in b} sum_t w[t, f] x_ft x_ft^H) A_b^H`` for every band ``b``.

    ``X (M, T, F)`` complex64 STFT cells, ``w (T, F)`` float32 cell weights, ``Linv (B, M, M)``
    the bands' whitening matrices (``A_b = Linv[b]``, the estimator's ``L_b^-1``), bands of
    ``bins_per_band`` adjacent bins (bin ``f`` belongs to band ``f // bins_per_band``; a
    trailing partial band is left out).
    Returns ``(B, M, M)`` complex64, Hermitian. Cells of weight 0 are skipped.
    """
    m, t, f = X.shape
    g = bins_per_band
    nb = min(f // g, Linv.shape[0])
    out = np.empty((nb, m, m), np.complex64)
    raw = np.empty((m, m), np.complex64)
    tmp = np.empty((m, m), np.complex64)
    x = np.empty(m, np.complex64)
    for b in range(nb):
        raw[:] = 0
        for j in range(g):
            fi = b * g + j
            for s in range(t):
                ws = w[s, fi]
                if ws == 0.0:
                    continue
                for i in range(m):
                    x[i] = X[i, s, fi]
                for i in range(m):
                    xi = x[i] * ws
                    for k in range(i, m):
                        raw[i, k] += xi * np.conj(x[k])
        for i in range(m):  # the lower triangle from the upper one
            for k in range(i):
                raw[i, k] = np.conj(raw[k, i])
        for i in range(m):  # tmp = L raw
            for k in range(m):
                acc = np.complex64(0)
                for n in range(m):
                    acc += Linv[b, i, n] * raw[n, k]
                tmp[i, k] = acc
        for i in range(m):  # C = tmp L^H
            for k in range(m):
                acc = np.complex64(0)
                for n in range(m):
                    acc += tmp[i, n] * np.conj(Linv[b, k, n])
                out[b, i, k] = acc
    return out


@njit(cache=True, fastmath=_FASTMATH)
def subspace_iteration(R, Q0, load):
    """One orthogonal (subspace) iteration per band: ``Z = (R_b + load I) Q0_b``, then
    modified Gram-Schmidt on the columns of ``Z``.

    ``R (B, M, M)`` Hermitian, ``Q0 (B, M, K)`` orthonormal columns (the previous window's
    signal subspace). Returns ``Q (B, M, K)`` and the Rayleigh quotients summed over the
    columns, ``lam[b] = sum_k Re{q0_k^H (R_b + load I) q0_k}`` (the signal-subspace power
    estimate, exact when ``Q0`` spans the dominant eigenvectors). Iterated, ``Q`` converges to
    the ``K`` dominant eigenvectors of ``R`` at the rate ``lambda_{K+1} / lambda_K``.
    """
    nb, m, k = Q0.shape
    Q = np.empty_like(Q0)
    lam = np.empty(nb, np.float32)
    z = np.empty((m, k), np.complex64)
    tiny = np.float32(1.1754944e-38)
    for b in range(nb):
        ls = np.float32(0)
        for c in range(k):
            for i in range(m):
                acc = load * Q0[b, i, c]
                for n in range(m):
                    acc += R[b, i, n] * Q0[b, n, c]
                z[i, c] = acc
                ls += (np.conj(Q0[b, i, c]) * acc).real
        lam[b] = ls
        for c in range(k):
            for q in range(c):  # z_c -= (q^H z_c) q
                dot = np.complex64(0)
                for i in range(m):
                    dot += np.conj(Q[b, i, q]) * z[i, c]
                for i in range(m):
                    z[i, c] -= dot * Q[b, i, q]
            nn = np.float32(0)
            for i in range(m):
                nn += z[i, c].real * z[i, c].real + z[i, c].imag * z[i, c].imag
            nn = max(np.sqrt(nn), tiny)
            for i in range(m):
                Q[b, i, c] = z[i, c] / nn
    return Q, lam


@njit(cache=True, fastmath=_FASTMATH)
def normmusic_map(Q, LinvH, W, anorm, floor, wf, pi, pj):
    """Band-weighted NormMUSIC pseudo-spectrum on the grid, ``(G,)`` float32.

    Per band ``b`` with signal subspace ``Q_b (M, K)`` (whitened) and ``B = L_b^-H Q_b``, the
    whitened steering vector's signal-subspace power ``||Q_b^H L_b^-1 a(u)||^2 = a^H S a`` with
    ``S = B B^H`` is, in pair form (``W (B, 2P, G)`` = ``[cos, -sin](2 pi f tau_ij(u))``)::

        a^H S a = tr S + 2 sum_{i<j} (Re S_ij cos - Im S_ij sin)

    so the noise-subspace power is ``d_b(u) = anorm_b(u) - a^H S a`` (``anorm = |L^-1 a|^2``),
    floored at ``floor (B, G)``, and ``p_b(u) = anorm_b(u) / d_b(u)``. Returns
    ``sum_b wf[b] p_b(u) / max_u p_b``. ``pi, pj``: the ``P`` microphone pairs ``i < j``.
    """
    nb, m, k = Q.shape
    npairs = pi.shape[0]
    ng = W.shape[2]
    out = np.zeros(ng, np.float32)
    B = np.empty((m, k), np.complex64)
    v = np.empty(2 * npairs, np.float32)
    p = np.empty(ng, np.float32)
    for b in range(nb):
        for i in range(m):
            for c in range(k):
                acc = np.complex64(0)
                for n in range(m):
                    acc += LinvH[b, i, n] * Q[b, n, c]
                B[i, c] = acc
        tr = np.float32(0)
        for i in range(m):
            for c in range(k):
                tr += B[i, c].real * B[i, c].real + B[i, c].imag * B[i, c].imag
        for q in range(npairs):
            s = np.complex64(0)
            for c in range(k):
                s += B[pi[q], c] * np.conj(B[pj[q], c])
            v[q] = np.float32(-2.0) * s.real
            v[npairs + q] = np.float32(-2.0) * s.imag
        for u in range(ng):
            p[u] = anorm[b, u] - tr
        for q in range(2 * npairs):  # d = anorm - tr S - 2 sum Re/Im S_ij W, vectorised over u
            vq = v[q]
            for u in range(ng):
                p[u] += vq * W[b, q, u]
        pmax = np.float32(0)
        for u in range(ng):
            d = max(p[u], floor[b, u])
            p[u] = anorm[b, u] / d
            pmax = max(pmax, p[u])
        scale = wf[b] / pmax
        for u in range(ng):
            out[u] += scale * p[u]
    return out


@njit(cache=True, fastmath=_FASTMATH)
def beam_power_share(C, steering, anorm, used_floor):
    """Mean over bands of the share of each band's power that a (whitened) delay-and-sum beam
    picks up: ``mean_f  Re{b_f^H C_f b_f} / (|b_f|^2 tr C_f)`` per beam.

    ``C (F, M, M)`` covariances, ``steering (F, M, n)`` beam vectors ``b``, ``anorm (F, n)`` =
    ``|b|^2``. Bands with ``tr C_f <= used_floor x max_f tr C_f`` carry no power and are left
    out of the mean. Returns ``(n,)`` float64 (all 0 when no band has power).
    """
    nf, m, _ = C.shape
    n = steering.shape[2]
    out = np.zeros(n, np.float64)
    tr = np.empty(nf, np.float32)
    tmax = np.float32(0)
    for f in range(nf):
        s = np.float32(0)
        for i in range(m):
            s += C[f, i, i].real
        tr[f] = s
        tmax = max(tmax, s)
    thresh = used_floor * max(tmax, np.float32(1e-30))
    used = 0
    for f in range(nf):
        if not tr[f] > thresh:
            continue
        used += 1
        for j in range(n):
            acc = np.float32(0)
            for i in range(m):
                cb = np.complex64(0)
                for k in range(m):
                    cb += C[f, i, k] * steering[f, k, j]
                acc += (np.conj(steering[f, i, j]) * cb).real
            out[j] += acc / anorm[f, j] / max(tr[f], np.float32(1e-30))
    if used > 0:
        out /= used
    return out


@njit(cache=True)
def local_maxima(rel, wraps, min_height, max_count):
    """Flat indices of the local maxima of a map ``rel (n_el, n_az)``, highest first (ties:
    lower index first), at most ``max_count``.

    A cell is a local maximum when it is ``>= min_height``, strictly above its neighbours
    "before" it (left in azimuth; the row below in elevation, three cells) and at least equal
    to those "after" it (so a plateau gives one maximum). Azimuth wraps around when ``wraps``;
    elevation does not (the rows beyond the grid count as -inf).
    """
    n_el, n_az = rel.shape
    idx = np.empty(n_el * n_az, np.int64)
    count = 0
    for e in range(n_el):
        for a in range(n_az):
            v = rel[e, a]
            if not v >= min_height:
                continue
            ok = True
            for de in range(-1, 2):
                ee = e + de
                if ee < 0 or ee >= n_el:
                    continue
                for da in range(-1, 2):
                    if de == 0 and da == 0:
                        continue
                    aa = a + da
                    if aa < 0 or aa >= n_az:
                        if not wraps:
                            continue
                        aa %= n_az
                    u = rel[ee, aa]
                    before = de < 0 or (de == 0 and da < 0)
                    if (before and not v > u) or (not before and not v >= u):
                        ok = False
                        break
                if not ok:
                    break
            if ok:
                idx[count] = e * n_az + a
                count += 1
    idx = idx[:count]
    heights = np.empty(count, np.float64)
    for i in range(count):
        heights[i] = -rel.flat[idx[i]]
    order = np.argsort(heights, kind="mergesort")
    return idx[order[:max_count]]


@njit(cache=True)
def map_peaks(doa_map, units, azimuths, elevations, wraps, max_count, cos_sep, min_height,
              az_step, el_step):
    """Peaks of a DoA map ``(n_el, n_az)``, strongest first, as rows ``[az, el, confidence]``
    ``(k, 3)`` float64 (``k = 0`` for a map that is constant or not finite).

    ``rel = (map - min) / (max - min)``; candidates are :func:`local_maxima` of ``rel`` above
    ``min_height`` (the 32 highest); each is accepted greedily by height when its unit vector
    ``units[e, a]`` has a cosine ``<= cos_sep`` with every accepted one, up to ``max_count``.
    Accepted positions are refined by a parabola through the neighbours, ``x += step x
    clip((y0 - y2) / (2 (y0 - 2 y1 + y2)), -1/2, 1/2)`` where the curvature is negative, in
    azimuth (wrapping, or away from the ends) and in elevation (away from the ends); the
    azimuth is wrapped to (-pi, pi]. The confidence is ``rel`` at the peak.
    """
    n_el, n_az = doa_map.shape
    out = np.empty((0, 3), np.float64)
    lo = np.inf
    hi = -np.inf
    for e in range(n_el):
        for a in range(n_az):
            v = np.float64(doa_map[e, a])
            if not np.isfinite(v):
                return out
            lo = min(lo, v)
            hi = max(hi, v)
    if not hi > lo:
        return out
    rel = np.empty((n_el, n_az), np.float64)
    for e in range(n_el):
        for a in range(n_az):
            rel[e, a] = (np.float64(doa_map[e, a]) - lo) / (hi - lo)
    cand = local_maxima(rel, wraps, min_height, 32)
    out = np.empty((min(max_count, cand.size), 3), np.float64)
    accepted = np.empty(cand.size, np.int64)
    n = 0
    two_pi = 2.0 * np.pi
    for idx in cand:
        if n >= max_count:
            break
        e, a = idx // n_az, idx % n_az
        close = False
        for j in range(n):
            ej, aj = accepted[j] // n_az, accepted[j] % n_az
            c = (units[e, a, 0] * units[ej, aj, 0] + units[e, a, 1] * units[ej, aj, 1]
                 + units[e, a, 2] * units[ej, aj, 2])
            if c > cos_sep:
                close = True
                break
        if close:
            continue  # closer than the minimum separation to a stronger peak
        az = azimuths[a]
        el = elevations[e]
        if n_az >= 3 and (wraps or 0 < a < n_az - 1):
            y0, y1, y2 = rel[e, a - 1 if a > 0 else n_az - 1], rel[e, a], rel[e, (a + 1) % n_az]
            den = y0 - 2.0 * y1 + y2
            if den < 0.0:
                az += az_step * min(max(0.5 * (y0 - y2) / den, -0.5), 0.5)
        if n_el >= 3 and 0 < e < n_el - 1:
            y0, y1, y2 = rel[e - 1, a], rel[e, a], rel[e + 1, a]
            den = y0 - 2.0 * y1 + y2
            if den < 0.0:
                el += el_step * min(max(0.5 * (y0 - y2) / den, -0.5), 0.5)
        az = az - two_pi * np.floor((az + np.pi) / two_pi)  # [-pi, pi)
        if az <= -np.pi:
            az += two_pi
        accepted[n] = idx
        out[n, 0] = az
        out[n, 1] = el
        out[n, 2] = min(max(rel[e, a], 0.0), 1.0)
        n += 1
    return out[:n]


@njit(cache=True)
def kalman_predict(x, P, F, Q, t):
    """Kalman prediction in place: ``x <- F x``, ``P <- F P F^T + T Q T`` with ``T = diag(t)``
    (a per-axis scaling of the process noise), symmetrised. ``x (n,)``, ``P, F, Q (n, n)``."""
    n = x.shape[0]
    xn = np.zeros(n)
    FP = np.zeros((n, n))
    for i in range(n):
        for k in range(n):
            xn[i] += F[i, k] * x[k]
            for j in range(n):
                FP[i, j] += F[i, k] * P[k, j]
    for i in range(n):
        x[i] = xn[i]
        for j in range(i + 1):
            acc = Q[i, j] * t[i] * t[j]
            for k in range(n):
                acc += FP[i, k] * F[j, k]
            P[i, j] = acc
    for i in range(n):  # the lower triangle was computed: mirror it
        for j in range(i + 1, n):
            P[i, j] = P[j, i]


@njit(cache=True)
def kalman_update(x, P, nu, R):
    """Kalman update in place for ``H = [I 0]`` (the first ``d = len(nu)`` state components are
    measured), Joseph form::

        S = P[:d, :d] + R,   K = P[:, :d] S^-1,   x <- x + K nu
        P <- (I - K H) P (I - K H)^T + K R K^T      (symmetrised)

    (valid for any gain, so rounding cannot make ``P`` lose positive definiteness). Raises
    when ``S`` is singular."""
    n = x.shape[0]
    d = nu.shape[0]
    S = P[:d, :d] + R
    K = np.ascontiguousarray(P[:, :d]) @ np.linalg.inv(S)
    for i in range(n):
        for k in range(d):
            x[i] += K[i, k] * nu[k]
    A = np.eye(n)
    A[:, :d] -= K
    AP = A @ P
    KR = K @ R
    for i in range(n):
        for j in range(i + 1):
            acc = 0.0
            for k in range(n):
                acc += AP[i, k] * A[j, k]
            for k in range(d):
                acc += KR[i, k] * K[j, k]
            P[i, j] = acc
    for i in range(n):
        for j in range(i + 1, n):
            P[i, j] = P[j, i]


_warm = False


def warm_up() -> None:
    """Compile (or load from the cache) every kernel for the array layouts the estimator
    passes: the band-limited spectra and every other band covariance are strided views.
    Once per process; later calls return at once."""
    global _warm
    if _warm:
        return
    m, t, f, k, g = 2, 3, 4, 1, 5
    X = np.ones((m, t, f + 1), np.complex64)[:, :, 1:]
    X.setflags(write=False)  # stft.window_spectra hands out read-only spectra
    eye = np.ascontiguousarray(np.broadcast_to(np.eye(m, dtype=np.complex64), (f, m, m)))
    pw, valid, floor = cell_power(X, np.float32(1.6), np.float32(1e-13))
    w = onset_snr_weights(pw, floor, valid, np.float32(10.0), np.float32(0.5), np.float32(1e-20))
    C = whitened_band_covariances(X, w, eye, 1)
    Q, _ = subspace_iteration(C, np.ascontiguousarray(eye[:, :, :k]), np.float32(1e-6))
    pairs = np.array([0]), np.array([1])
    ones = np.ones((f, g), np.float32)
    normmusic_map(Q, eye, np.ones((f, 2, g), np.float32), ones, ones * np.float32(1e-6),
                  np.ones(f, np.float32), *pairs)
    grid_az, grid_el = np.arange(g, dtype=np.float64), np.zeros(1)
    units = np.zeros((1, g, 3))
    for arr in (grid_az, grid_el, units):
        arr.setflags(write=False)  # DirectionGrid's arrays are read-only
    map_peaks(np.arange(g, dtype=np.float32)[None], units, grid_az, grid_el, True, 3, 0.9, 0.3,
              1.0, 0.0)
    for n in (4, 6):  # the angular and the 3-D filter
        x, P, F = np.zeros(n), np.eye(n), np.eye(n)
        F.setflags(write=False)  # tracker.cv_model hands out read-only (cached) F and Q
        kalman_predict(x, P, F, F, np.ones(n))
        kalman_update(x, P, np.zeros(n // 2), np.eye(n // 2))
    for cov in (C, C[::2]):
        beam_power_share(cov, np.ones((cov.shape[0], m, 2), np.complex64),
                         np.ones((cov.shape[0], 2), np.float32), np.float32(1e-6))
    _warm = True
