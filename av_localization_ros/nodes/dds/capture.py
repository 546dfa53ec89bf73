"""The capture node over Cyclone DDS, without ROS 2 (same topics, types, QoS and CDR).

    python -m av_localization_ros.nodes.dds.capture --params-file config/capture.yaml [--device NAME]

Publishes ``audio/audio`` (reliable), ``audio/audio_info`` (transient-local) and ``/diagnostics``.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

import yaml

from ...bag import messages as m
from ..capture import (CAPTURE_PARAMETERS, AudioCapture, ChunkSequencer, capture_diagnostics,
                       chunk_msg, config_from_params, info_msg)
from ..diagnostics import DIAGNOSTIC_ARRAY
from . import wire
from .wire import resolve

log = logging.getLogger(__name__)


def load_capture_params(path: str | None, node_name: str = "av_capture") -> dict:
    values = {k: v[0] for k, v in CAPTURE_PARAMETERS.items()}
    if path:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        for section in (doc.get("/**", {}), doc.get(node_name, {}), doc.get(f"/{node_name}", {})):
            got = (section or {}).get("ros__parameters", {}) or {}
            unknown = sorted(set(got) - set(CAPTURE_PARAMETERS))
            if unknown:
                raise ValueError(f"{path}: unknown capture parameters {unknown}")
            values.update(got)
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-file", default=None)
    ap.add_argument("--namespace", default="")
    ap.add_argument("--domain-id", type=int, default=None)
    ap.add_argument("--duration", type=float, default=0.0)
    for name, (default, description) in CAPTURE_PARAMETERS.items():
        ap.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=description)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s] %(message)s")
    values = load_capture_params(args.params_file)
    for name in CAPTURE_PARAMETERS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    try:
        config = config_from_params(values)
    except ValueError as exc:
        log.error("bad capture parameters in %s: %s", args.params_file, exc)
        return 2
    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    node = wire.DdsNode("av_capture", domain)
    r = lambda n: resolve(args.namespace, n)  # noqa: E731
    info_pub = node.create_publisher(m.AUDIO_INFO, r("audio/audio_info"), wire.QOS_LATCHED)
    audio_pub = node.create_publisher(m.AUDIO_STAMPED, r("audio/audio"), wire.QosProfile(True, 100, False))
    diag_pub = node.create_publisher(DIAGNOSTIC_ARRAY, "/diagnostics", wire.QOS_DEFAULT)
    info_pub.publish(info_msg(config))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    wire.stop_after(args.duration, stop)
    capture = AudioCapture(config)
    seq = ChunkSequencer()
    published = 0
    period = float(values["diagnostics_period_s"])
    next_diag = time.monotonic() + period
    status = 0
    try:
        try:
            capture.start()
        except ValueError as exc:  # no such device, too many channels, rate refused
            log.error("cannot start capture: %s", exc)
            return 2
        print("READY", flush=True)
        while not stop.is_set():
            chunk = capture.read(timeout_s=0.2)
            if chunk is not None:
                seq.push(chunk)
                audio_pub.publish_cdr(wire.encode(chunk_msg(chunk, str(values["frame_id"])), m.AUDIO_STAMPED))
                published += 1
            elif not capture.active:
                log.error("the audio stream stopped (device disconnected?); exiting")
                diag_pub.publish(capture_diagnostics("av_capture", capture, seq, published))
                status = 1
                break
            if time.monotonic() >= next_diag:
                next_diag = time.monotonic() + period
                diag_pub.publish(capture_diagnostics("av_capture", capture, seq, published))
    finally:
        capture.stop()
        log.info("stopped: %s", capture.stats())
        node.close()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
