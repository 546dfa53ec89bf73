"""Build the TensorRT engines of the shipped ONNX graphs ahead of time (on the GPU host).

    python trt_build/build_engines.py [--model-dir models/] [--cache DIR] [--fp32]

The building and the engine cache are ``av_localization_ros.av.engine_build`` (the TensorRT
backend builds on first use with the same code); this is its command line. Engines go to
``--cache`` (default: ``$AVLOC_TRT_CACHE`` or ``~/.cache/av_localization_ros/trt_engines``,
where the node looks for them).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    from av_localization_ros.av import engine_build
except ImportError:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from av_localization_ros.av import engine_build


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default=str(Path(__file__).resolve().parents[1] / "models"))
    ap.add_argument("--cache", default=str(engine_build.default_cache_dir()))
    ap.add_argument("--fp32", action="store_true", help="build FP32 engines instead of FP16")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        for name in ("image_encoder.onnx", "audio_encoder.onnx"):
            print(engine_build.get_or_build_engine(Path(a.model_dir) / name, a.cache,
                                                   fp16=not a.fp32))
    except engine_build.TensorRTUnavailable as e:
        print(f"cannot build engines: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
