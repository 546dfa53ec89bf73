"""The localizer node over Cyclone DDS, without ROS 2 (same topics, types, QoS and CDR).

    python -m av_localization_ros.nodes.dds.localizer --params-file config/params.yaml

It is a thin shell: messages in -> :class:`LocalizerLogic` -> messages out, exactly as the rclpy
shell (``localizer_node.py``) does. Inputs (relative to ``--namespace``):
``camera/image_raw`` + ``camera/camera_info`` (sensor-data QoS, paired by stamp),
``audio/audio`` (reliable), ``audio/audio_info`` and ``/tf_static`` (transient-local).
Outputs: ``av_localization/{doa,doa_map,heatmap,overlay,speakers,speaker_markers}`` and
``/diagnostics``. Nothing raised by bad input stops it: wire-level failures and callback errors
are counted by reason in the diagnostics.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from typing import Any

from ...bag import messages as m
from ...core.params import load_params
from ..diagnostics import DIAGNOSTIC_ARRAY, DiagnosticsReporter
from .. import hri
from ..localizer_logic import heatmap_runner_from_params
from ..localizer_logic import OUTPUT_TOPICS, LocalizerLogic, validate_params
from ..sync import ImageInfoSync
from . import wire
from .wire import resolve

log = logging.getLogger(__name__)

DIAGNOSTICS = "/diagnostics"
OUTPUT_PREFIX = "av_localization"

# rclpy's tf_static QoS: reliable, transient local, keep last 1 (readers keep more)
QOS_TF_STATIC_READER = wire.QosProfile(True, 100, True)


class DdsLocalizer:
    def __init__(self, params: dict[str, Any], namespace: str = "", domain_id: int | None = None,
                 node_name: str = "av_localizer", diagnostics_period_s: float = 1.0,
                 heatmap_runner=None, publish_overlay: bool = True,
                 sync_slop_s: float = 0.05, sync_queue: int = 10, latest_image_only: bool = True,
                 publish_voices: bool = False):
        self.logic = LocalizerLogic(params, heatmap_runner=heatmap_runner,
                                    publish_overlay=publish_overlay)
        self.reporter = DiagnosticsReporter(node_name, hardware_id=str(params.get("array_frame", "")))
        self.node = wire.DdsNode(node_name, domain_id, on_malformed=self._on_malformed)
        self.namespace = namespace
        self.diagnostics_period_s = diagnostics_period_s
        self._next_diag = time.monotonic() + diagnostics_period_s
        self.sync = ImageInfoSync(self._on_image_pair, slop_s=sync_slop_s, queue_size=sync_queue)
        r = lambda name: resolve(namespace, name)  # noqa: E731
        n = self.node
        self.outputs = {suffix: n.create_publisher(msgtype, r(f"{OUTPUT_PREFIX}/{suffix}"))
                        for suffix, msgtype in OUTPUT_TOPICS.items()}
        self.diag_pub = n.create_publisher(DIAGNOSTIC_ARRAY, DIAGNOSTICS)
        self.voices_pub = self.tf_pub = None
        if publish_voices:  # REP-155: hri_msgs/IdsList is registered in the typestore here
            hri.extend_typestore(n.store)
            self.voices_pub = n.create_publisher(hri.IDS_LIST, hri.TRACKED_VOICES_TOPIC)
            self.tf_pub = n.create_publisher(m.TF_MESSAGE, hri.TF_TOPIC, wire.QosProfile(True, 100, False))
        # names and types from the one input table (bag.messages.INPUT_TOPICS)
        inputs = {  # role: (callback, QoS), subscribed in this order
            "audio_info": (self._on_audio_info, wire.QOS_LATCHED),
            "tf_static": (self.logic.on_tf_static, QOS_TF_STATIC_READER),
            "audio": (self._on_audio, wire.QosProfile(True, 100, False)),
            "camera_info": (self.sync.add_info, wire.QOS_SENSOR_DATA),
        }
        for role, (callback, qos) in inputs.items():
            name, msgtype = m.INPUT_TOPICS[role]
            n.create_subscription(msgtype, r(name), self._guard(role, callback), qos)
        name, msgtype = m.INPUT_TOPICS["image"]
        self.image_sub = n.create_subscription(
            msgtype, r(name), self._guard("image", self.sync.add_image),
            wire.QOS_SENSOR_DATA, latest_only=latest_image_only)

    # --- inputs ---------------------------------------------------------------------------
    def _guard(self, name: str, fn):
        def cb(msg):
            self.reporter.count(name)
            try:
                fn(msg)
            except Exception as exc:  # never let bad input kill the node
                self.reporter.count(f"drop.callback_error.{name}")
                log.warning("error handling %s: %s: %s", name, type(exc).__name__, exc)
        return cb

    def _on_malformed(self, sub: wire.Subscription, exc: Exception) -> None:
        name = sub.topic.rsplit("/", 1)[-1]
        self.reporter.count(f"drop.malformed_message.{name}")
        log.debug("malformed %s: %s", sub.topic, exc)

    def _on_audio_info(self, msg) -> None:
        self.logic.on_audio_info(msg)

    def _on_audio(self, msg) -> None:
        self._publish(self.logic.on_audio(msg))

    def _on_image_pair(self, image, camera_info) -> None:
        if camera_info is None:
            self.reporter.count("drop.image_without_matching_camera_info")
        try:
            self._publish(self.logic.on_image(image, camera_info))
        except Exception as exc:
            self.reporter.count("drop.callback_error.image")
            log.warning("error handling image: %s: %s", type(exc).__name__, exc)

    # --- outputs --------------------------------------------------------------------------
    def _publish(self, outputs) -> None:
        for suffix, msg in outputs:
            pub = self.outputs.get(suffix)
            if pub is None:
                continue
            pub.publish(msg)
            if suffix == "speaker_markers" and self.voices_pub is not None:
                ids, tf = hri.voice_messages(msg, self.logic.array_frame, self.node.store)
                self.voices_pub.publish(ids)
                if tf.transforms:
                    self.tf_pub.publish(tf)

    def publish_diagnostics(self) -> None:
        # stamped with the newest data time, like every other output
        skipped = self.image_sub.skipped - self.reporter.events.get("drop.image_skipped_behind", 0)
        if skipped > 0:
            self.reporter.count("drop.image_skipped_behind", skipped)
        msg = self.reporter.build(self.logic.diagnostics(), self.logic.stream.data_stamp_ns)
        self.diag_pub.publish(msg)

    # --- loop -----------------------------------------------------------------------------
    def spin_once(self, timeout_s: float = 0.05) -> None:
        self.node.spin_once(timeout_s)
        now = time.monotonic()
        if now >= self._next_diag:
            self._next_diag = now + self.diagnostics_period_s
            try:
                self.publish_diagnostics()
            except Exception as exc:
                log.warning("diagnostics failed: %s", exc)

    def spin(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.spin_once()

    def close(self) -> None:
        self.node.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-file", default=None, help="ROS 2 params YAML (config/params.yaml)")
    ap.add_argument("--node-name", default="av_localizer")
    ap.add_argument("--namespace", default="")
    ap.add_argument("--domain-id", type=int, default=None,
                    help="DDS domain (default: $ROS_DOMAIN_ID or 0)")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = run until signalled)")
    ap.add_argument("--no-overlay", action="store_true", help="do not publish the overlay image")
    ap.add_argument("--no-heatmap", action="store_true", help="do not load the audio-visual heatmap model")
    ap.add_argument("--diagnostics-period", type=float, default=1.0)
    ap.add_argument("--voices", action="store_true",
                    help="publish REP-155 /humans/voices/tracked and voice_<id> frames on /tf")
    ap.add_argument("--all-images", action="store_true",
                    help="process every queued image even when behind (default: only the newest)")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="[%(levelname)s] [%(name)s] %(message)s")
    import os

    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    try:
        params = load_params(args.params_file, node_name=args.node_name)
        if args.no_heatmap:
            params["heatmap.enabled"] = False
        validate_params(params)
    except ValueError as exc:
        log.error("bad parameters in %s: %s", args.params_file, exc)
        return 2
    runner = heatmap_runner_from_params(params)
    node = DdsLocalizer(params, namespace=args.namespace, domain_id=domain, node_name=args.node_name,
                        diagnostics_period_s=args.diagnostics_period, heatmap_runner=runner,
                        publish_overlay=not args.no_overlay,
                        latest_image_only=not args.all_images, publish_voices=args.voices)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    wire.stop_after(args.duration, stop)
    log.info("av_localizer (DDS) up: domain %d, namespace %r", domain, args.namespace)
    print("READY", flush=True)
    try:
        node.spin(stop)
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
