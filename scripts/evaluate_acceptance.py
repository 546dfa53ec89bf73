#!/usr/bin/env python3
"""Acceptance evaluation of the audio path on held-out simulated scenes.

For each scene kind (static1, overlap2, moving3) and N seeds: simulate a scene with real speech
(../shared/data/speech by default), write it as a rosbag2, replay it through the node logic and
pool the metrics (the mean over scenes, with a 95 % bootstrap interval over scenes: with 20
scenes the per-scene spread is large, so a mean a little under a target may not differ from
it). Prints a table and writes a JSON summary.

    python scripts/evaluate_acceptance.py --scenes 20 --out out/acceptance
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from av_localization_ros.bag.writer import write_scene_bag  # noqa: E402
from av_localization_ros.core.params import load_params  # noqa: E402
from av_localization_ros.evaluation.metrics import flatten_metrics  # noqa: E402
from av_localization_ros.evaluation.replay import replay_bag  # noqa: E402
from av_localization_ros.sim.scenarios import make_scenario  # noqa: E402
from av_localization_ros.sim.scene import simulate_scene  # noqa: E402

SEED_OFFSET = 10_000  # held out: training/tuning used seeds below this

TARGETS = {
    "static1": {"doa.azimuth_mae_deg": ("<=", 5.0), "doa.acc_at_10": (">=", 0.95)},
    "overlap2": {"doa.acc_at_10": (">=", 0.80)},
    "moving3": {"mot.mota": (">=", 0.80), "mot.idf1": (">=", 0.80)},
}


def bootstrap_interval(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean over scenes (NaN scenes left out)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan")
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scenes", type=int, default=20)
    ap.add_argument("--kinds", nargs="+", default=list(TARGETS))
    ap.add_argument("--params", default=None)
    ap.add_argument("--speech-dir", default=str(REPO.parent / "shared" / "data" / "speech"))
    ap.add_argument("--noise-dir", default=str(REPO.parent / "shared" / "data" / "noise"))
    ap.add_argument("--out", type=Path, default=Path("out/acceptance"))
    args = ap.parse_args()
    speech_dir = args.speech_dir if os.path.isdir(args.speech_dir) else None
    noise_dir = args.noise_dir if os.path.isdir(args.noise_dir) else None
    if speech_dir is None:
        print("WARNING: no real speech found; using the shipped espeak-ng clips")
    params = load_params(args.params)
    params["heatmap.enabled"] = False  # audio path only
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for kind in args.kinds:
        per_scene = []
        t_sim = t_replay = 0.0
        for i in range(args.scenes):
            seed = SEED_OFFSET + i
            t0 = time.perf_counter()
            rec = simulate_scene(make_scenario(kind, seed, speech_dir=speech_dir, noise_dir=noise_dir))
            t1 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                bag = Path(tmp) / "scene"
                write_scene_bag(rec, bag)
                res = replay_bag(bag, params, Path(tmp) / "out", make_plots=False,
                                 progress=False, write_bag=False)
            t2 = time.perf_counter()
            t_sim += t1 - t0
            t_replay += t2 - t1
            m = flatten_metrics(res.metrics or {})
            m["seed"] = seed
            m["rtf"] = res.real_time_factor
            per_scene.append(m)
            print(f"{kind} seed {seed}: " + ", ".join(
                f"{k}={m.get(k):.3f}" for k in ("doa.azimuth_mae_deg", "doa.acc_at_10", "mot.mota", "mot.idf1",
                          "locata.ospa_deg")
                if isinstance(m.get(k), (int, float))), flush=True)
        keys = sorted({k for m in per_scene for k, v in m.items() if isinstance(v, (int, float))})
        # one value per scene and metric, NaN where a scene has none
        columns = {k: [m[k] if isinstance(m.get(k), (int, float)) else np.nan for m in per_scene]
                   for k in keys}
        mean = {k: float(np.nanmean(v)) for k, v in columns.items()}
        checks = {}
        for key, (op, target) in TARGETS.get(kind, {}).items():
            value = mean.get(key, float("nan"))
            lo, hi = bootstrap_interval(columns.get(key, []))
            checks[key] = {"value": value, "ci95": [lo, hi], "target": f"{op} {target}",
                           "pass": bool(value <= target if op == "<=" else value >= target)}
        pooled = {k: float(np.nansum(columns.get(f"mot.{k}", [np.nan])))
                  for k in ("idtp", "idfn", "idfp", "num_misses", "num_false_positives")}
        seps = [v for v in columns.get("locata.handover_separation_deg", []) if np.isfinite(v)]
        identity = None
        if pooled["idtp"] > 0:  # where IDF1 goes: misses / false tracks, or identity alone
            identity = {
                "idfn_from_misses": pooled["num_misses"] / max(pooled["idfn"], 1.0),
                "idfp_from_false_positives":
                    pooled["num_false_positives"] / max(pooled["idfp"], 1.0),
                "track_handovers_per_scene": mean.get("locata.track_handovers", float("nan")),
                # median over the scenes with handovers of each scene's median
                "handover_separation_deg_median": float(np.median(seps)) if seps else np.nan,
            }
            print(f"   {kind} identity: IDTP {pooled['idtp']:.0f}, IDFN {pooled['idfn']:.0f} "
                  f"({identity['idfn_from_misses']:.0%} misses), IDFP {pooled['idfp']:.0f} "
                  f"({identity['idfp_from_false_positives']:.0%} false tracks); track "
                  f"handovers {identity['track_handovers_per_scene']:.2f} per scene, "
                  f"median separation {identity['handover_separation_deg_median']:.1f} deg",
                  flush=True)
        summary[kind] = {"scenes": args.scenes, "mean": mean, "checks": checks,
                         "identity": identity, "sim_s": round(t_sim, 1),
                         "replay_s": round(t_replay, 1), "per_scene": per_scene}
        print(f"== {kind}: " + ", ".join(
            f"{k} {c['value']:.3f} [95% CI {c['ci95'][0]:.3f}-{c['ci95'][1]:.3f}] "
            f"({c['target']}: {'PASS' if c['pass'] else 'FAIL'})"
            for k, c in checks.items()), flush=True)
    (args.out / "acceptance.json").write_text(json.dumps(summary, indent=2, default=float))
    print(f"wrote {args.out / 'acceptance.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
