#!/usr/bin/env python3
"""Real-time factor of the whole audio path, per core, with the timing of each stage.

The audio path is what the node runs for every DoA step: ring-buffer push of each chunk,
window slicing, STFT, VAD, DoA (MUSIC and SRP-PHAT rows), peak picking and tracking. Pinned
to one thread, the real-time factor is audio seconds processed per wall second ("per core").
Each configuration runs ``--repeats`` times on a fresh localizer and the median run is
reported (a shared VM varies by ~5-10% from run to run), with the slowest and fastest beside
it.

    python benchmarks/bench_realtime.py --seconds 60
"""
import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from av_localization_ros.core.params import defaults  # noqa: E402
from av_localization_ros.core.stream import StreamingLocalizer  # noqa: E402
from av_localization_ros.sim.scenarios import make_scenario  # noqa: E402
from av_localization_ros.sim.scene import simulate_scene  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--chunk-ms", type=float, default=20.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rec = simulate_scene(make_scenario("moving3", 1))
    fs = rec.sample_rate
    reps = int(np.ceil(args.seconds * fs / rec.audio.shape[1]))
    audio = np.tile(rec.audio, (1, reps))[:, : int(args.seconds * fs)]
    params = defaults()
    params["heatmap.enabled"] = False
    chunk = int(args.chunk_ms * fs / 1000)
    results = {}
    for method, rate in (("music", 10.0), ("srp_phat", 10.0), ("music", 30.0), ("srp_phat", 30.0)):
        params["doa.method"] = method
        params["doa.rate_hz"] = rate
        runs = []
        for _ in range(max(1, args.repeats)):
            loc = StreamingLocalizer(params)
            loc.on_audio_info(audio.shape[0], fs, "F32LE")
            t0 = time.perf_counter()
            n_out = 0
            for k in range(0, audio.shape[1] - chunk + 1, chunk):
                stamp = rec.start_ns + (k * 1_000_000_000) // fs
                n_out += len(loc.on_audio(audio[:, k:k + chunk], stamp))
            runs.append((time.perf_counter() - t0, n_out, loc))
        runs.sort(key=lambda r: r[0])
        wall, n_out, loc = runs[len(runs) // 2]  # the median run
        results[(method, rate)] = wall
        print(f"{method:8s} DoA rate {rate:4.0f} Hz: {args.seconds:.0f} s of {audio.shape[0]}-ch {fs} Hz audio "
              f"in {wall:.3f} s -> real-time factor {args.seconds / wall:7.1f}x per core "
              f"({n_out} steps, {1e3 * wall / max(n_out, 1):.3f} ms/step incl. buffering; "
              f"{len(runs)} runs: {args.seconds / runs[-1][0]:.1f}x-{args.seconds / runs[0][0]:.1f}x)")
        for stage, values in loc.latency_s.items():
            v = 1e3 * np.asarray(values)
            print(f"    {stage:8s} mean {v.mean():.3f} ms  p50 {np.percentile(v, 50):.3f} ms  "
                  f"p99 {np.percentile(v, 99):.3f} ms")
    target = 100.0
    for method in ("music", "srp_phat"):
        rtf = args.seconds / results[(method, 10.0)]
        print(f"{method}: target >= {target:.0f}x at 10 Hz: {'PASS' if rtf >= target else 'FAIL'} "
              f"({rtf:.1f}x, median of {max(1, args.repeats)} runs)")


if __name__ == "__main__":
    main()
