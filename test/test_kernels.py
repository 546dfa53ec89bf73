"""The compiled DoA kernels against their definitions, written out independently here in
double precision (einsum, eigh, brute-force neighbour checks): random inputs, no stored outputs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from av_localization_ros.core import doa as D
from av_localization_ros.core import kernels as K


def _rng(seed=0):
    return np.random.default_rng(seed)


def _cplx(rng, *shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _orthonormal(rng, n_bands, m, k):
    q, _ = np.linalg.qr(_cplx(rng, n_bands, m, k).astype(np.complex128))
    return np.ascontiguousarray(q.astype(np.complex64))


def test_cell_power_and_weights_match_their_definitions():
    rng = _rng(1)
    X = _cplx(rng, 4, 9, 13)
    X[:, 4] = 0.0  # a zero-filled gap frame
    pw, valid, floor = K.cell_power(X, np.float32(1.6), np.float32(1e-13))
    ref_pw = (np.abs(X.astype(np.complex128)) ** 2).mean(axis=0)
    np.testing.assert_allclose(pw, ref_pw, rtol=1e-5)
    assert valid.tolist() == [t != 4 for t in range(9)]
    np.testing.assert_allclose(floor, 1.6 * ref_pw[valid].min(axis=0), rtol=1e-5)

    noise = ref_pw.mean(axis=0).astype(np.float32)
    w = K.onset_snr_weights(pw, noise, valid, np.float32(10.0), np.float32(0.5), np.float32(1e-20))
    rise = 10.0 * np.diff(np.log10(ref_pw + 1e-20), axis=0)
    ref = np.zeros_like(ref_pw)
    ref[1:] = np.sqrt(np.maximum(ref_pw[1:] / noise - 1.0, 0.0)) * np.clip(rise, 0.0, 10.0)
    ref[4] = ref[5] = 0.0  # the gap frame and the frame after it have no onset
    np.testing.assert_allclose(w, ref, rtol=2e-4, atol=1e-6)
    assert np.all(w[0] == 0.0)


def test_whitened_band_covariances_match_definition():
    rng = _rng(2)
    m, t, f, g = 4, 7, 9, 2
    X = _cplx(rng, m, t, f)
    w = rng.uniform(0, 2, (t, f)).astype(np.float32)
    w[rng.uniform(size=w.shape) < 0.3] = 0.0
    Linv = _cplx(rng, f // g, m, m)
    C = K.whitened_band_covariances(X, w, Linv, g)
    assert C.shape == (f // g, m, m)  # the trailing partial band is left out
    Xd = X.astype(np.complex128)
    for b in range(f // g):
        cells = slice(b * g, (b + 1) * g)
        raw = np.einsum("tf,itf,jtf->ij", w[:, cells], Xd[:, :, cells], np.conj(Xd[:, :, cells]))
        L = Linv[b].astype(np.complex128)
        ref = L @ raw @ L.conj().T
        np.testing.assert_allclose(C[b], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_non_finite_cells_stay_non_finite():
    """fastmath keeps IEEE semantics: a NaN cell must not vanish into a finite covariance."""
    rng = _rng(3)
    X = _cplx(rng, 4, 5, 4)
    X[1, 2, 0] = np.nan
    eye = np.ascontiguousarray(np.broadcast_to(np.eye(4, dtype=np.complex64), (4, 4, 4)))
    C = K.whitened_band_covariances(X, np.ones((5, 4), np.float32), eye, 1)
    assert not np.isfinite(C[0]).all()
    assert np.isfinite(C[1:]).all()


def test_subspace_iteration_converges_to_the_dominant_eigenvectors():
    rng = _rng(4)
    n_bands, m, k = 5, 4, 2
    V = _orthonormal(rng, n_bands, m, m).astype(np.complex128)
    lam = np.array([0.1, 0.3, 4.0, 9.0])  # a clear gap after the two dominant ones
    R = np.ascontiguousarray((V * lam[None, None, :]) @ V.conj().transpose(0, 2, 1), dtype=np.complex64)
    Q0 = _orthonormal(rng, n_bands, m, k)
    load = np.float32(1e-3)
    Q1, lam1 = K.subspace_iteration(R, Q0, load)
    # one step: the Rayleigh quotients of the start subspace
    Rl = R.astype(np.complex128) + load * np.eye(m)
    ref = np.einsum("bik,bij,bjk->b", Q0.conj(), Rl, Q0).real
    np.testing.assert_allclose(lam1, ref, rtol=1e-5)
    np.testing.assert_allclose(np.einsum("bik,bil->bkl", Q1.conj(), Q1),
                               np.broadcast_to(np.eye(k), (n_bands, k, k)), atol=1e-5)
    Q = Q1
    for _ in range(60):
        Q, lam_sig = K.subspace_iteration(R, Q, load)
    top = V[:, :, m - k:]
    np.testing.assert_allclose(Q @ Q.conj().transpose(0, 2, 1), top @ top.conj().transpose(0, 2, 1),
                               atol=1e-4)
    np.testing.assert_allclose(lam_sig, 13.0 + k * load, rtol=1e-5)


def test_normmusic_map_matches_direct_evaluation_with_steering_vectors():
    """The pair form (real steering matrix of cos / -sin of the pair phases) gives the same
    NormMUSIC spectrum as ``|b|^2 / (|b|^2 - ||Q^H b||^2)`` with ``b = L^-1 a(u)`` built from
    :func:`doa.steering_vectors` directly."""
    rng = _rng(5)
    pos = np.array([[0.032, 0.0, 0.0], [0.0, 0.032, 0.0], [-0.032, 0.0, 0.0], [0.0, -0.032, 0.01]])
    m, k = 4, 2
    grid = D.DirectionGrid.azimuth_only(5.0, 20.0)
    freqs = np.array([500.0, 1500.0, 3100.0, 6000.0])
    tau = D._pair_tdoas(pos, grid, 343.0)
    phase = 2 * np.pi * freqs[:, None, None] * tau[None]
    W = np.ascontiguousarray(np.concatenate([np.cos(phase), -np.sin(phase)], axis=1), dtype=np.float32)
    A = D.steering_vectors(freqs, pos, grid, 343.0)  # (F, M, G)
    G = _cplx(rng, 4, m, m).astype(np.complex128)
    gamma = G @ G.conj().transpose(0, 2, 1) + m * np.eye(m)
    Linv = np.linalg.inv(np.linalg.cholesky(gamma))
    Bw = Linv @ A  # whitened steering vectors
    anorm = np.sum(np.abs(Bw) ** 2, axis=1)  # (F, G)
    Q = _orthonormal(rng, 4, m, k)
    wf = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    floor = (1e-6 * anorm).astype(np.float32)
    pi, pj = np.triu_indices(m, k=1)
    out = K.normmusic_map(Q, np.ascontiguousarray(Linv.conj().transpose(0, 2, 1), dtype=np.complex64),
                          W, anorm.astype(np.float32), floor, wf, pi, pj)
    sig = np.sum(np.abs(Q.conj().transpose(0, 2, 1).astype(np.complex128) @ Bw) ** 2, axis=1)
    p = anorm / np.maximum(anorm - sig, 1e-6 * anorm)
    ref = (wf[:, None] * p / p.max(axis=1, keepdims=True)).sum(axis=0)
    np.testing.assert_allclose(out, ref, rtol=2e-3)


def test_beam_power_share_matches_definition_and_skips_silent_bands():
    rng = _rng(6)
    nf, m, n = 6, 4, 3
    Y = _cplx(rng, nf, m, 10).astype(np.complex128)
    C = Y @ Y.conj().transpose(0, 2, 1)
    C[2] = 0.0  # a band without power
    b = _cplx(rng, nf, m, n)
    anorm = np.sum(np.abs(b.astype(np.complex128)) ** 2, axis=1)
    share = K.beam_power_share(C.astype(np.complex64), b, anorm.astype(np.float32), np.float32(1e-6))
    bd = b.astype(np.complex128)
    quad = np.einsum("fin,fij,fjn->fn", bd.conj(), C, bd).real
    tr = np.trace(C, axis1=1, axis2=2).real
    used = tr > 0
    ref = (quad[used] / anorm[used] / tr[used, None]).mean(axis=0)
    np.testing.assert_allclose(share, ref, rtol=1e-4)
    assert np.all(K.beam_power_share(np.zeros((3, m, m), np.complex64), b[:3],
                                     anorm[:3].astype(np.float32), np.float32(1e-6)) == 0.0)


def _local_maxima_reference(rel, wraps, min_height):
    """Brute force: compare every cell with its 8 neighbours by the stated rule."""
    n_el, n_az = rel.shape
    found = []
    for e in range(n_el):
        for a in range(n_az):
            v = rel[e, a]
            if v < min_height:
                continue
            ok = True
            for de in (-1, 0, 1):
                for da in (-1, 0, 1):
                    ee, aa = e + de, a + da
                    if (de, da) == (0, 0) or not 0 <= ee < n_el:
                        continue
                    if not 0 <= aa < n_az:
                        if not wraps:
                            continue
                        aa %= n_az
                    before = de < 0 or (de == 0 and da < 0)
                    ok &= v > rel[ee, aa] if before else v >= rel[ee, aa]
            if ok:
                found.append((-v, e * n_az + a))
    return [i for _, i in sorted(found)]


@pytest.mark.parametrize("shape,wraps", [((1, 90), True), ((1, 37), False), ((7, 36), True), ((5, 11), False)])
def test_local_maxima_matches_brute_force(shape, wraps):
    rng = _rng(7)
    for _ in range(20):
        rel = np.round(rng.uniform(size=shape), 1)  # coarse values: plateaus and ties
        got = K.local_maxima(rel, wraps, 0.3, 1000).tolist()
        assert got == _local_maxima_reference(rel, wraps, 0.3)
    assert K.local_maxima(rel, wraps, 0.3, 2).tolist() == _local_maxima_reference(rel, wraps, 0.3)[:2]


def test_local_maxima_plateau_and_wrap():
    rel = np.zeros((1, 12))
    rel[0, 3:6] = 1.0  # a plateau: one maximum, at its first cell
    rel[0, 11], rel[0, 0] = 0.5, 0.4  # one peak across the seam with wrap-around, two without
    assert K.local_maxima(rel, True, 0.3, 32).tolist() == [3, 11]
    assert K.local_maxima(rel, False, 0.3, 32).tolist() == [3, 11, 0]
    rel[0, 0] = 0.6  # now cell 0 is above its wrapped left neighbour 11
    assert K.local_maxima(rel, True, 0.3, 32).tolist() == [3, 0]
    assert K.local_maxima(rel, False, 0.3, 32).tolist() == [3, 0, 11]


@pytest.mark.parametrize("n", [4, 6])
def test_kalman_predict_and_joseph_update_match_the_textbook_formulas(n):
    rng = _rng(8)
    d = n // 2
    A = rng.standard_normal((n, n))
    P0 = A @ A.T + n * np.eye(n)
    x0 = rng.standard_normal(n)
    F = np.eye(n) + 0.1 * rng.standard_normal((n, n))
    B = rng.standard_normal((n, n))
    Q = B @ B.T
    t = rng.uniform(0.5, 2.0, n)
    x, P = x0.copy(), P0.copy()
    K.kalman_predict(x, P, F, Q, t)
    np.testing.assert_allclose(x, F @ x0, rtol=1e-12)
    np.testing.assert_allclose(P, F @ P0 @ F.T + np.diag(t) @ Q @ np.diag(t), rtol=1e-12)

    Rm = rng.standard_normal((d, d))
    R = Rm @ Rm.T + np.eye(d)
    nu = rng.standard_normal(d)
    H = np.hstack([np.eye(d), np.zeros((d, n - d))])
    x1, P1 = x.copy(), P.copy()
    K.kalman_update(x1, P1, nu, R)
    S = H @ P @ H.T + R
    gain = P @ H.T @ np.linalg.inv(S)
    np.testing.assert_allclose(x1, x + gain @ nu, rtol=1e-10)
    # optimal gain: the Joseph form equals the short form (I - K H) P
    np.testing.assert_allclose(P1, (np.eye(n) - gain @ H) @ P, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(P1, P1.T)
    with pytest.raises(np.linalg.LinAlgError):
        K.kalman_update(x1, np.zeros((n, n)), nu, np.zeros((d, d)))


def test_warm_up_compiles_every_specialisation_the_stream_uses():
    """After ``warm_up`` the live path compiles nothing more (else the first window or track
    update pays seconds of compilation). Run in a fresh interpreter: in this one, earlier
    tests have already compiled whatever the stream needs."""
    code = textwrap.dedent("""
        import numpy as np
        from av_localization_ros.core import kernels as K
        from av_localization_ros.core.params import defaults
        from av_localization_ros.core.stream import StreamingLocalizer
        from roomsim import FS, RESPEAKER, simulate, source_at, syllables
        K.warm_up()
        jitted = {n: f for n, f in vars(K).items() if hasattr(f, "signatures")}
        before = {n: set(f.signatures) for n, f in jitted.items()}
        x = simulate(RESPEAKER, [source_at(40.0)], [syllables(3 * FS, seed=1, floor=0.3)])
        for method in ("music", "srp_phat"):
            p = defaults()
            p.update({"heatmap.enabled": False, "doa.method": method})
            loc = StreamingLocalizer(p)
            loc.on_audio_info(x.shape[0], FS, "F32LE")
            outs = []
            for k in range(0, x.shape[1] - 320, 320):
                outs += loc.on_audio(x[:, k:k + 320], 10**18 + k * 62500)
            assert any(o.tracks for o in outs), method  # the tracker's filters ran
        new = {n: sorted(map(str, set(f.signatures) - before[n])) for n, f in jitted.items()}
        assert not any(new.values()), new
    """)
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), str(here)]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
