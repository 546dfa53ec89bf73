#!/usr/bin/env python3
"""Accuracy and speed of our DoA estimator against pyroomacoustics' own DoA algorithms.

Simulates ``--scenes`` shoebox rooms per mode with pyroomacoustics (RT60 U(0.2, 0.9) s by
Sabine absorption, image sources up to ``--max-order``; SNR U(5, 30) dB re the active speech
power, diffuse noise with the sinc coherence of a spherically isotropic field built from the
real noise recordings in ../shared/data/noise when present (else pink), plus white sensor noise
20 dB below it), ReSpeaker USB 4-mic array (32 mm radius) 1 m or more from the walls at
0.8-1.3 m height, talkers 1-3 m away at head height 1.1-1.8 m:

* ``one``: one static talker (real speech from ../shared/data/speech, else noise bursts);
* ``two``: two static talkers >= 40 deg apart in azimuth talking at the same time.

Every 0.1 s a causal 0.256 s window (nfft 512, hop 256, 16 kHz) is cut; the same STFT and the
same azimuth grid (2 deg) go to pyroomacoustics' SRP, MUSIC, NormMUSIC and TOPS (told the true
number of sources, band --fmin..--fmax) and to our DoaEstimator (music and srp_phat, with the
shipped ``doa.smoothing_s`` and memoryless, peaks capped at the true number of sources; plus
one row with up to 3 peaks, as the pipeline runs it by default, and one steering the horizontal
plane like pyroomacoustics' 2-D algorithms instead of the shipped elevated ring).
Scored like evaluation.metrics.doa_accuracy: on each window whose end is inside a talker's
ground-truth activity (dry-signal 20 ms energy within 30 dB of its 95th percentile, 0.1 s
hangover), the N most confident estimates (N = active talkers; pyroomacoustics' ranked by its
grid values, ours by peak confidence) and the sources are paired by Hungarian assignment on
the azimuth error; ACC@10 is the fraction of source-windows within 10 deg (a source left
without an estimate is a miss), MAE is over the pairs. Time is per window on one thread:
pyroomacoustics' ``locate_sources`` alone (its STFT is given), ours ``estimate()`` including
its own STFT. TOPS (~0.3 s a window) is scored on every ``--tops-every``-th window only (its row
shows how many).

    python benchmarks/bench_doa_vs_pyroomacoustics.py --scenes 20
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one core, like the per-core real-time budget

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pyroomacoustics as pra  # noqa: E402
import scipy.signal as ss  # noqa: E402
import soundfile as sf  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from av_localization_ros.core.doa import DirectionGrid, DoaEstimator  # noqa: E402
from av_localization_ros.core.geometry import MicArray  # noqa: E402
from av_localization_ros.core.params import defaults  # noqa: E402
from av_localization_ros.core.stft import stft  # noqa: E402
from av_localization_ros.core.types import AudioWindow  # noqa: E402

FS = 16000
NFFT, HOP = 512, 256
WIN = int(0.256 * FS)
STEP = int(0.1 * FS)
C = 343.0
PRA_METHODS = ("SRP", "MUSIC", "NormMUSIC", "TOPS")
SHARED = REPO.parent / "shared" / "data"


# ------------------------------------------------------------------------------------ signals
def _load_mono(path: Path) -> np.ndarray:
    x, fs = sf.read(str(path), dtype="float64")
    x = x.mean(axis=1) if x.ndim > 1 else x
    if fs != FS:
        fr = Fraction(FS, fs).limit_denominator(1000)
        x = ss.resample_poly(x, fr.numerator, fr.denominator)
    x = x - x.mean()
    return x / (np.std(x) + 1e-12)


def speech_signal(files: list[Path], n: int, rng) -> np.ndarray:
    """``n`` samples of real speech (files joined with 0.2-0.5 s pauses), or noise bursts."""
    if not files:  # speech-like fallback: 0.3-1.2 s bursts of pink-ish noise with pauses
        x = np.zeros(n)
        t = int(0.2 * FS)
        while t < n:
            d = int(rng.uniform(0.3, 1.2) * FS)
            b = np.cumsum(rng.standard_normal(d)) * 0.02 + rng.standard_normal(d)
            x[t:t + d] = (b * np.hanning(d))[: max(0, min(d, n - t))]
            t += d + int(rng.uniform(0.1, 0.5) * FS)
        return x / (np.std(x) + 1e-12)
    out = [np.zeros(int(rng.uniform(0.05, 0.3) * FS))]
    for i in rng.permutation(len(files)):
        out += [_load_mono(files[i]), np.zeros(int(rng.uniform(0.2, 0.5) * FS))]
        if sum(map(len, out)) >= n:
            break
    x = np.concatenate(out)
    x = np.pad(x, (0, max(0, n - len(x))))[:n]
    return x / (np.std(x) + 1e-12)


def diffuse_noise(mics: np.ndarray, n: int, rng, base: np.ndarray | None) -> np.ndarray:
    """``(M, n)`` noise with the inter-mic coherence sinc(2 f d / c) of a diffuse field."""
    m = mics.shape[0]
    if base is None:  # independent pink noises
        w = np.fft.rfft(rng.standard_normal((m, n)), axis=1)
        f = np.fft.rfftfreq(n, 1.0 / FS)
        w /= np.sqrt(np.maximum(f, 20.0))[None]
    else:  # independent segments of a real recording
        starts = rng.integers(0, base.size - n, size=m)
        w = np.fft.rfft(np.stack([base[s:s + n] for s in starts]), axis=1)
    f = np.fft.rfftfreq(n, 1.0 / FS)
    d = np.linalg.norm(mics[:, None] - mics[None], axis=-1)
    gamma = np.sinc(2.0 * f[:, None, None] * d[None] / C) + 1e-6 * np.eye(m)[None]
    L = np.linalg.cholesky(gamma)  # (F, M, M)
    y = np.fft.irfft(np.einsum("fmk,kf->mf", L, w), n, axis=1)
    return y / np.sqrt(np.mean(y ** 2))


def activity(dry: np.ndarray, threshold_db: float = 30.0, hangover_s: float = 0.1) -> np.ndarray:
    """Per-sample ground truth: 20 ms frames (10 ms hop) within ``threshold_db`` of the 95th
    percentile frame energy, held ``hangover_s``."""
    hop = FS // 100
    nf = int(np.ceil(dry.size / hop))
    xp = np.pad(dry, (0, nf * hop + 2 * hop - dry.size))
    e = np.lib.stride_tricks.sliding_window_view(xp, 2 * hop)[::hop][:nf].__pow__(2).mean(axis=1)
    act = e > np.percentile(e, 95) * 10 ** (-threshold_db / 10)
    hang = int(round(hangover_s * 100))
    c = np.concatenate([[0], np.cumsum(act)])
    idx = np.arange(nf)
    act = (c[idx + 1] - c[np.maximum(idx + 1 - (hang + 1), 0)]) > 0
    return np.repeat(act, hop)[: dry.size]


def make_scene(n_talkers: int, rng, speech_files, noise_base, max_order: int) -> dict:
    mics = MicArray.from_preset("respeaker_usb_4mic_v2").positions
    dur = 4.0 if n_talkers == 1 else 5.0
    n = int(dur * FS)
    while True:
        dim = np.array([rng.uniform(4, 8), rng.uniform(3, 7), rng.uniform(2.5, 3.5)])
        rt60 = rng.uniform(0.2, 0.9)
        try:
            e_abs, order = pra.inverse_sabine(rt60, dim)
        except ValueError:
            continue
        arr = np.array([rng.uniform(1, dim[0] - 1), rng.uniform(1, dim[1] - 1), rng.uniform(0.8, 1.3)])
        pos, azs = [], []
        for _ in range(500):
            a = rng.uniform(-np.pi, np.pi)
            if any(abs(np.angle(np.exp(1j * (a - b)))) < np.deg2rad(40) for b in azs):
                continue
            dz = min(rng.uniform(1.1, 1.8), dim[2] - 0.35) - arr[2]
            d = rng.uniform(1.0, 3.0)
            if d < abs(dz) + 0.3:
                continue
            r = np.sqrt(d * d - dz * dz)
            p = arr + np.array([r * np.cos(a), r * np.sin(a), dz])
            if np.all(p > 0.3) and np.all(p < dim - 0.3):
                pos.append(p)
                azs.append(a)
                if len(pos) == n_talkers:
                    break
        if len(pos) == n_talkers:
            break
    room = pra.ShoeBox(dim, fs=FS, materials=pra.Material(e_abs), max_order=min(order, max_order))
    room.add_microphone_array(arr[:, None] + mics.T)
    dry = []
    for k in range(n_talkers):
        s = speech_signal(speech_files, n, rng) * 10 ** (rng.uniform(-3, 3) / 20 if k else 0.0)
        dry.append(s)
        room.add_source(pos[k], signal=s)
    room.compute_rir()
    speech = np.zeros((mics.shape[0], n))
    for k in range(n_talkers):
        for mi in range(mics.shape[0]):
            speech[mi] += ss.oaconvolve(dry[k], room.rir[mi][k])[:n]
    act = np.stack([activity(d) for d in dry])
    snr = rng.uniform(5, 30)
    p_speech = np.mean(speech[:, act.any(axis=0)] ** 2)
    noise = diffuse_noise(mics, n, rng, noise_base)
    noise = noise + 0.1 * rng.standard_normal(noise.shape)
    noise *= np.sqrt(p_speech / (np.mean(noise ** 2) * 10 ** (snr / 10)))
    x = speech + noise
    x = (0.9 * x / np.abs(x).max()).astype(np.float32)
    return dict(x=x, az=np.array(azs), active=act, rt60=rt60, snr=snr,
                dist=np.array([np.linalg.norm(q - arr) for q in pos]))


# ------------------------------------------------------------------------------------ scoring
def _az_err_deg(a, b):
    return np.abs(np.rad2deg(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b))))))


class Score:
    def __init__(self):
        self.err: list[float] = []
        self.hits = 0
        self.n_src = 0
        self.times: list[float] = []

    def add(self, true_az: np.ndarray, est_az: np.ndarray) -> None:
        """``est_az``: estimates, most confident first; only the first ``true_az.size``
        count (known number of sources)."""
        self.n_src += true_az.size
        est_az = est_az[:true_az.size]
        if est_az.size == 0 or true_az.size == 0:
            return
        d = _az_err_deg(true_az[:, None], est_az[None, :])
        for i, j in zip(*linear_sum_assignment(d)):
            self.err.append(float(d[i, j]))
            self.hits += d[i, j] <= 10.0

    @property
    def mae(self):
        return float(np.mean(self.err)) if self.err else float("nan")

    @property
    def acc(self):
        return self.hits / self.n_src if self.n_src else float("nan")

    @property
    def ms(self):
        return 1e3 * float(np.median(self.times)) if self.times else float("nan")


def run_mode(n_talkers: int, args, speech_files, noise_base) -> dict[str, Score]:
    rng = np.random.default_rng(args.seed + 1000 * n_talkers)
    mics = MicArray.from_preset("respeaker_usb_4mic_v2")
    grid = DirectionGrid.azimuth_only(2.0)
    pra_az = np.mod(grid.azimuths, 2 * np.pi)
    pra_algos = {name: pra.doa.algorithms[name](mics.positions[:, :2].T, FS, NFFT, c=C,
                                                 num_src=n_talkers, azimuth=pra_az)
                 for name in PRA_METHODS}
    ours = {}
    for method in ("music", "srp_phat"):
        for smooth in (defaults()["doa.smoothing_s"], 0.0):
            p = defaults()
            p.update({"sample_rate": FS, "doa.method": method, "doa.freq_min_hz": args.fmin,
                      "doa.freq_max_hz": args.fmax, "doa.max_sources": n_talkers,
                      "doa.smoothing_s": smooth})
            ours[f"ours {method}" + ("" if smooth else " (memoryless)")] = p
    # pyroomacoustics' 2-D algorithms steer the horizontal plane; ours steers a ring at
    # doa.azimuth_only_elevation_deg. This row steers the horizontal plane too (same model)
    p = dict(ours["ours music"])
    p["doa.azimuth_only_elevation_deg"] = 0.0
    ours["ours music, horizontal ring"] = p
    # as the pipeline runs it (doa.max_sources 3): up to 3 peaks, of which the N most
    # confident are scored (N active talkers), as evaluation.metrics.doa_accuracy does
    p = defaults()
    p.update({"sample_rate": FS, "doa.method": "music", "doa.freq_min_hz": args.fmin,
              "doa.freq_max_hz": args.fmax})
    ours["ours music, <= 3 peaks"] = p
    scores = {k: Score() for k in list(ours) + [f"pra {m}" for m in PRA_METHODS]}
    t_sim = 0.0
    n_win = 0
    for i in range(args.scenes):
        t0 = time.perf_counter()
        sc = make_scene(n_talkers, rng, speech_files, noise_base, args.max_order)
        t_sim += time.perf_counter() - t0
        x = sc["x"]
        est = {k: DoaEstimator(mics, p) for k, p in ours.items()}
        before = {k: (s.hits, s.n_src) for k, s in scores.items()}
        for s in range(0, x.shape[1] - WIN + 1, STEP):
            end = s + WIN
            act = sc["active"][:, end - 1]
            truth = sc["az"][act]
            seg = x[:, s:end]
            w = AudioWindow(seg, stamp_ns=10 ** 9 + int(round(s * 1e9 / FS)), sample_rate=FS)
            # stateful: run on every window, score the active ones. The order rotates from
            # window to window: the first estimator to touch a fresh window pays its cache
            # misses (measured: ~0.25 ms more), which must not land on one row only
            names = list(est)
            r = (s // STEP) % len(names)
            for k in names[r:] + names[:r]:
                e = est[k]
                t0 = time.perf_counter()
                _, peaks = e.estimate(w)
                scores[k].times.append(time.perf_counter() - t0)
                if act.any():
                    scores[k].add(truth, np.array([q.azimuth for q in peaks]))
            if not act.any():
                continue
            X = stft(seg, NFFT, HOP)
            n_win += 1
            for name, algo in pra_algos.items():
                if name == "TOPS" and n_win % args.tops_every:
                    continue  # ~0.3 s a window: scored on every --tops-every-th window only
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    algo.locate_sources(X, num_src=n_talkers, freq_range=[args.fmin, args.fmax])
                scores[f"pra {name}"].times.append(time.perf_counter() - t0)
                # most confident first (grid.find_peaks returns them in ascending order)
                order = np.argsort(-np.asarray(algo.grid.values)[algo.src_idx], kind="stable")
                scores[f"pra {name}"].add(truth, np.asarray(algo.azimuth_recon, float)[order])
        if args.verbose:
            acc = {k: (s.hits - before[k][0]) / max(1, s.n_src - before[k][1])
                   for k, s in scores.items() if k in ("ours music", "pra SRP", "pra NormMUSIC")}
            print(f"  scene {i}: rt60 {sc['rt60']:.2f} s snr {sc['snr']:4.1f} dB az "
                  f"{np.round(np.rad2deg(sc['az']), 1).tolist()} dist "
                  f"{np.round(sc['dist'], 2).tolist()} ACC@10 "
                  + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)
    print(f"  ({args.scenes} scenes simulated in {t_sim:.1f} s)")
    return scores


def print_table(title: str, scores: dict[str, Score]) -> None:
    print(f"\n{title}")
    print(f"{'method':28s} {'az MAE (deg)':>12s} {'ACC@10':>8s} {'ms/window':>10s} {'src-windows':>12s}")
    for k, s in scores.items():
        print(f"{k:28s} {s.mae:12.2f} {s.acc:8.3f} {s.ms:10.3f} {s.n_src:12d}")
    t_srp = scores["pra SRP"].ms
    best_pra = max(PRA_METHODS, key=lambda m: scores[f"pra {m}"].acc)
    b = scores[f"pra {best_pra}"]
    for k in ("ours music", "ours srp_phat"):
        s = scores[k]
        print(f"{k}: time / pra SRP time = {s.ms / t_srp:.3f} ({t_srp / s.ms:.1f}x faster); "
              f"ACC@10 {s.acc:.3f} vs best pra ({best_pra}) {b.acc:.3f} ({s.acc - b.acc:+.3f}); "
              f"MAE {s.mae:.2f} vs {b.mae:.2f} deg")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=20, help="scenes per mode")
    ap.add_argument("--modes", nargs="+", default=["one", "two"], choices=["one", "two"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fmin", type=float, default=300.0)
    ap.add_argument("--fmax", type=float, default=7500.0)
    ap.add_argument("--max-order", type=int, default=20, help="image-source order cap (speed)")
    ap.add_argument("--speech-dir", type=Path, default=SHARED / "speech")
    ap.add_argument("--noise-dir", type=Path, default=SHARED / "noise")
    ap.add_argument("--tops-every", type=int, default=4,
                    help="run pra TOPS (slow) on every N-th scored window only")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    speech_files = sorted(p for p in args.speech_dir.glob("*") if p.suffix in (".wav", ".flac", ".mp3")) \
        if args.speech_dir.is_dir() else []
    noise_files = sorted(args.noise_dir.glob("*.wav")) if args.noise_dir.is_dir() else []
    noise_base = np.concatenate([_load_mono(p) for p in noise_files]) if noise_files else None
    print(f"speech: {len(speech_files)} files from {args.speech_dir}" if speech_files
          else "speech: none found, using noise bursts")
    print(f"noise: diffuse from {len(noise_files)} real recordings" if noise_files
          else "noise: diffuse pink")
    for mode in args.modes:
        n_talkers = 1 if mode == "one" else 2
        print(f"\n== mode {mode}: {n_talkers} talker(s), {args.scenes} scenes ==", flush=True)
        scores = run_mode(n_talkers, args, speech_files, noise_base)
        print_table(f"{mode} talker(s): band {args.fmin:.0f}-{args.fmax:.0f} Hz, 2 deg grid, "
                    f"ISM order <= {args.max_order}", scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
