"""`av-localize`: simulate a scene bag, replay a bag with evaluation, or run the demo."""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from .core.params import load_params

log = logging.getLogger("av_localize")


def _simulate(scenario: str, seed: int, out: Path, storage: str, sample_format: str,
              speech_dir: str | None) -> Path:
    from .bag.writer import write_scene_bag
    from .sim.scenarios import make_scenario
    from .sim.scene import SceneConfigError, simulate_scene

    _check_replaceable_bag(out)  # before minutes of simulation, not after
    try:
        recording = simulate_scene(make_scenario(scenario, seed, speech_dir=speech_dir))
    except (SceneConfigError, FileNotFoundError) as exc:  # e.g. no such --speech-dir
        raise UsageError(str(exc)) from exc
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_scene_bag(recording, out, storage=storage, sample_format=sample_format)
    return out


class UsageError(Exception):
    """A command line that cannot be run (printed as ``error: ...``, exit status 2)."""


_BAG_SUFFIXES = (".mcap", ".db3", ".db3-shm", ".db3-wal", ".yaml")


def _check_replaceable_bag(out: Path) -> None:
    """``out`` may be created, or replaced when it is a rosbag2 directory (metadata.yaml and
    storage files only); anything else is refused rather than deleted."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out} exists and is not a bag directory")
    entries = list(out.iterdir())
    if not (out / "metadata.yaml").is_file() or any(
            not e.is_file() or not e.name.endswith(_BAG_SUFFIXES) for e in entries):
        raise UsageError(f"{out} exists and is not a rosbag2 directory; refusing to replace it "
                         "(give a new path, or remove it yourself)")


def _replay(bag: Path, params: dict, out_dir: Path, heatmap: bool, plots: bool, storage: str):
    from .evaluation.replay import replay_bag
    from .nodes.localizer_logic import heatmap_runner_from_params

    params = dict(params)
    if not heatmap:
        params["heatmap.enabled"] = False
    runner = heatmap_runner_from_params(params)
    return replay_bag(bag, params, out_dir, heatmap_runner=runner, make_plots=plots,
                      storage=storage)


def _print_result(result) -> None:
    print(f"outputs: {result.n_outputs}  audio: {result.audio_s:.1f} s  wall: {result.wall_s:.2f} s"
          f"  real-time factor: {result.real_time_factor:.1f}x")
    if result.metrics is not None:
        print(json.dumps(result.metrics, indent=2))
    drops = {k: v for k, v in result.diagnostics.items() if k.startswith("drop.") and v}
    if drops:
        print("drops:", json.dumps(drops))
    print(f"wrote {result.out_dir}")


def _seed(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="av-localize", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("simulate", help="write a simulated scene bag")
    s.add_argument("-o", "--output", type=Path, required=True, help="bag directory to create")
    s.add_argument("--scenario", default="demo", choices=["demo", "static1", "overlap2", "moving3"])
    s.add_argument("--seed", type=_seed, default=0, help="scene seed (>= 0)")
    s.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    s.add_argument("--sample-format", default="S16LE", choices=["S16LE", "F32LE"])
    s.add_argument("--speech-dir", default=None,
                   help="folder of real speech recordings (default: $AVLOC_SPEECH_DIR, else "
                        "the shipped espeak-ng clips); the bag records the one used")
    r = sub.add_parser("replay", help="run the pipeline over a bag and evaluate it")
    r.add_argument("bag", type=Path)
    r.add_argument("--params", default=None, help="ROS 2 params YAML (default: built-in defaults)")
    r.add_argument("-o", "--output", type=Path, required=True)
    r.add_argument("--no-heatmap", action="store_true")
    r.add_argument("--no-plots", action="store_true")
    r.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"])
    d = sub.add_parser("demo", help="simulate the demo scene, replay it, print metrics, plot")
    d.add_argument("-o", "--output", type=Path, default=Path("out/demo"))
    d.add_argument("--params", default=None)
    d.add_argument("--speech-dir", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        return _run(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.cmd == "simulate":
        path = _simulate(args.scenario, args.seed, args.output, args.storage,
                         args.sample_format, args.speech_dir)
        print(f"wrote {path}")
        return 0
    from .nodes.localizer_logic import validate_params

    try:  # replay and demo: a params file that cannot be used stops here, with its problems
        params = load_params(args.params, node_name="av_localizer")
        validate_params(params)  # the configuration as a whole: preset, windows, grids
    except (OSError, ValueError) as exc:
        print(f"error: {args.params or 'default parameters'}: {exc}", file=sys.stderr)
        return 2
    if args.cmd == "replay":
        if not args.bag.exists():
            print(f"error: no bag at {args.bag}", file=sys.stderr)
            return 2
        _print_result(_replay(args.bag, params, args.output, not args.no_heatmap,
                              not args.no_plots, args.storage))
        return 0
    # demo
    bag = _simulate("demo", 0, args.output / "scene", "mcap", "S16LE", args.speech_dir)
    print(f"simulated demo scene -> {bag}")
    _print_result(_replay(bag, params, args.output / "replay", True, True, "mcap"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
