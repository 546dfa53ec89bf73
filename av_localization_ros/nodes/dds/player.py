"""A rosbag2 player over Cyclone DDS (``ros2 bag play`` without ROS 2).

    python -m av_localization_ros.nodes.dds.player BAG [--rate 1.0] [--clock] [--wait-for TOPIC ...]

* Messages go out with their recorded timing (bag receive time), scaled by ``--rate``; the CDR
  bytes are published exactly as stored (no decode / re-encode).
* Latched topics (offered transient_local in the bag's metadata, or ``/tf_static`` and
  ``*/audio_info``) are published transient-local, so late subscribers still get them.
* Messages sent before a subscriber matches are lost (DDS, as in ROS 2): ``--wait-for`` waits
  until each named topic has a matched reader before playing.
* ``--clock`` publishes rosgraph_msgs/Clock on ``/clock`` (for nodes with ``use_sim_time``).
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path
from typing import Iterable

from rosbags.rosbag2 import Reader

from ...bag import messages as m
from . import wire

log = logging.getLogger(__name__)

LATCHED_NAMES = ("/tf_static",)
LATCHED_SUFFIXES = ("/audio_info",)
CLOCK = "rosgraph_msgs/msg/Clock"


def _is_latched(connection) -> bool:
    if connection.topic in LATCHED_NAMES or connection.topic.endswith(LATCHED_SUFFIXES):
        return True
    ext = getattr(connection, "ext", None)
    profiles = getattr(ext, "offered_qos_profiles", None)
    if isinstance(profiles, str):  # older rosbags: the YAML text
        return "durability: 1" in profiles or "transient_local" in profiles.lower()
    for qos in profiles or []:
        durability = getattr(qos, "durability", None)
        if durability is not None and "TRANSIENT_LOCAL" in str(durability).upper():
            return True
    return False


class DdsBagPlayer:
    def __init__(self, bag: str | Path, node: wire.DdsNode | None = None, domain_id: int | None = None,
                 topics: Iterable[str] | None = None, exclude: Iterable[str] = (),
                 namespace: str = ""):
        self.path = Path(bag)
        self.node = node or wire.DdsNode("av_bag_player", domain_id)
        self._own_node = node is None
        self.reader = Reader(self.path)
        self.reader.open()
        wanted = set(topics) if topics else None
        self.connections = [c for c in self.reader.connections
                            if (wanted is None or c.topic in wanted) and c.topic not in set(exclude)]
        self.publishers: dict[int, wire.Publisher] = {}
        for c in self.connections:
            if c.msgtype not in self.node.store.fielddefs:
                log.warning("skipping %s: type %s not in the typestore", c.topic, c.msgtype)
                continue
            qos = wire.QOS_LATCHED if _is_latched(c) else wire.QosProfile(True, 100, False)
            topic = c.topic if not namespace else "/" + namespace.strip("/") + c.topic
            self.publishers[c.id] = self.node.create_publisher(c.msgtype, topic, qos)
        self.clock_pub = None
        self.published = 0

    def enable_clock(self) -> None:
        self.clock_pub = self.node.create_publisher(CLOCK, "/clock", wire.QosProfile(True, 1, False))

    def wait_for_subscribers(self, topics: Iterable[str], timeout_s: float = 10.0) -> bool:
        pubs = [p for p in self.publishers.values() if p.topic in set(topics)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.matched() > 0 for p in pubs):
                return True
            time.sleep(0.02)
        missing = [p.topic for p in pubs if p.matched() == 0]
        log.warning("no subscriber matched for %s after %.1f s; playing anyway", missing, timeout_s)
        return False

    def play(self, rate: float = 1.0, stop: threading.Event | None = None,
             on_publish=None) -> int:
        """Publish every message at its recorded time / ``rate``; returns the count published.

        ``on_publish(topic, timestamp_ns, wall_time)`` is called after each publish.
        """
        stop = stop or threading.Event()
        conns = [c for c in self.connections if c.id in self.publishers]
        t0_bag = None
        t0_wall = time.monotonic()
        for connection, timestamp, raw in self.reader.messages(connections=conns):
            if stop.is_set():
                break
            if t0_bag is None:
                t0_bag = timestamp
            if rate > 0:
                due = t0_wall + (timestamp - t0_bag) / 1e9 / rate
                while True:
                    delay = due - time.monotonic()
                    if delay <= 0 or stop.is_set():
                        break
                    time.sleep(min(delay, 0.05))
            if self.clock_pub is not None:
                self.clock_pub.publish(m.new_msg(CLOCK, clock=m.ns_to_stamp(timestamp)))
            self.publishers[connection.id].publish_cdr(raw)
            self.published += 1
            if on_publish is not None:
                on_publish(connection.topic, timestamp, time.monotonic())
        return self.published

    def close(self) -> None:
        self.reader.close()
        if self._own_node:
            self.node.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Play a rosbag2 over Cyclone DDS (ROS 2 wire protocol).")
    ap.add_argument("bag")
    ap.add_argument("--rate", type=float, default=1.0, help="playback rate factor (0 = as fast as possible)")
    ap.add_argument("--topics", nargs="*", default=None)
    ap.add_argument("--exclude", nargs="*", default=[])
    ap.add_argument("--namespace", default="")
    ap.add_argument("--clock", action="store_true", help="publish /clock")
    ap.add_argument("--wait-for", nargs="*", default=[], help="topics that need a matched reader first")
    ap.add_argument("--wait-timeout", type=float, default=10.0)
    ap.add_argument("--linger", type=float, default=1.0,
                    help="seconds to stay up after the last message (latched data and reliable resends)")
    ap.add_argument("--domain-id", type=int, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s] %(message)s")
    import os

    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    player = DdsBagPlayer(args.bag, domain_id=domain, topics=args.topics, exclude=args.exclude,
                          namespace=args.namespace)
    if args.clock:
        player.enable_clock()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if args.wait_for:
            player.wait_for_subscribers(args.wait_for, args.wait_timeout)
        print("PLAYING", flush=True)
        n = player.play(args.rate, stop)
        log.info("published %d messages", n)
        print(f"DONE {n}", flush=True)
        stop.wait(args.linger)
    finally:
        player.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
