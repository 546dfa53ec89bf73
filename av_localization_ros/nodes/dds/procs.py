"""Helpers for tests and benchmarks that run DDS nodes as separate processes on loopback only."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

SHARED_LOOPBACK = Path(__file__).resolve().parents[4] / "shared" / "dds" / "cyclonedds-loopback.xml"

LOOPBACK_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<CycloneDDS xmlns="https://cdds.io/config">
  <Domain Id="any">
    <General>
      <Interfaces><NetworkInterface name="lo"/></Interfaces>
      <AllowMulticast>false</AllowMulticast>
    </General>
    <Discovery>
      <ParticipantIndex>auto</ParticipantIndex>
      <MaxAutoParticipantIndex>60</MaxAutoParticipantIndex>
      <Peers><Peer Address="127.0.0.1"/></Peers>
    </Discovery>
  </Domain>
</CycloneDDS>
"""


def loopback_config(tmp_dir: str | Path) -> str:
    """``file://`` URI of a loopback-only, unicast-only Cyclone config (../shared's when present)."""
    if SHARED_LOOPBACK.is_file():
        return SHARED_LOOPBACK.as_uri()
    path = Path(tmp_dir) / "cyclonedds-loopback.xml"
    path.write_text(LOOPBACK_XML)
    return path.as_uri()


DDS_VARS = ("CYCLONEDDS_URI", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")


def loopback_env(tmp_dir: str | Path, domain_id: int | None = None,
                 apply: bool = False) -> dict[str, str]:
    """Environment for DDS processes: loopback config, localhost discovery, a private domain.

    A random domain keeps concurrent test runs on the same machine apart. ``apply=True`` also
    sets these variables in ``os.environ`` (Cyclone reads CYCLONEDDS_URI when a domain starts);
    tests set them with ``monkeypatch`` instead (see :data:`DDS_VARS`).
    """
    if domain_id is None:
        domain_id = random.Random(os.getpid() ^ time.time_ns()).randint(1, 200)
    env = {
        "CYCLONEDDS_URI": loopback_config(tmp_dir),
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id),
    }
    if apply:
        os.environ.update(env)
    root = str(Path(__file__).resolve().parents[3])
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = root + os.pathsep + full.get("PYTHONPATH", "") if full.get("PYTHONPATH") else root
    full["PYTHONUNBUFFERED"] = "1"
    return full


def start(module: str, args: list[str], env: dict[str, str], log_path: str | Path) -> subprocess.Popen:
    """``python -m module args`` with stdout+stderr to ``log_path``."""
    log = open(log_path, "w")
    try:
        return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def wait_for_line(log_path: str | Path, text: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if text in Path(log_path).read_text(errors="replace"):
                return True
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return text in Path(log_path).read_text(errors="replace")
        time.sleep(0.05)
    return False


def stop(proc: subprocess.Popen | None, timeout_s: float = 5.0) -> int | None:
    """SIGINT, then SIGKILL after ``timeout_s``; returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(2)
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout_s)
    return proc.returncode
