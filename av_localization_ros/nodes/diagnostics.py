"""diagnostic_msgs/DiagnosticArray from the node logic's counters (ROS-free; rosbags messages).

One DiagnosticStatus per node, ``name`` ``<node>: localizer``:

* rates over the last period: ``rate_hz.<input>`` (images, audio chunks, ...) and
  ``rate_hz.outputs``;
* stage latency from the pipeline's timings: ``latency_ms.<stage>.p50`` / ``.p99``;
* drops by reason: ``drop.<reason>`` (cumulative) -- bad encodings, size mismatches, missing
  camera_info, audio format changes, malformed wire payloads, ...;
* the audio ring buffer's counters (``audio.*``) and the microphones that carry no signal
  (``audio.dead_channels``, left out of the DoA; ``audio.dead_channel_windows``).

Level: OK; WARN when any drop counter grew during the last period or a microphone is dead
(message says which); STALE when no input arrived during the last period.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Mapping

from ..bag import messages as m

DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"
DIAGNOSTIC_STATUS = "diagnostic_msgs/msg/DiagnosticStatus"
KEY_VALUE = "diagnostic_msgs/msg/KeyValue"
OK, WARN, ERROR, STALE = 0, 1, 2, 3


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class DiagnosticsReporter:
    """Turns counters into a DiagnosticArray once per period.

    ``count(name)`` counts shell-level events (inputs received, wire-level drops); ``build()``
    merges them with ``logic.diagnostics()``.
    """

    def __init__(self, node_name: str, hardware_id: str = "mic_array",
                 clock=time.monotonic):
        self.node_name = node_name
        self.hardware_id = hardware_id
        self.clock = clock
        self.events: Counter = Counter()
        self._last_events: Counter = Counter()
        self._last_drops: dict[str, int] = {}
        self._last_t = clock()

    def count(self, name: str, n: int = 1) -> None:
        self.events[name] += n

    def snapshot(self, logic_diag: Mapping[str, Any]) -> dict[str, Any]:
        """Flat key -> value dict: logic diagnostics + shell counters + rates since last call."""
        now = self.clock()
        dt = max(now - self._last_t, 1e-6)
        values: dict[str, Any] = dict(logic_diag)
        for k, v in sorted(self.events.items()):
            if k.startswith("drop."):
                values[k] = values.get(k, 0) + v
            else:
                values[f"count.{k}"] = v
                values[f"rate_hz.{k}"] = round((v - self._last_events.get(k, 0)) / dt, 3)
        outputs = int(values.get("outputs", 0))
        values["rate_hz.outputs"] = round((outputs - self._last_events.get("__outputs", 0)) / dt, 3)
        self._last_events = Counter(self.events)
        self._last_events["__outputs"] = outputs
        self._last_t = now
        return values

    def build(self, logic_diag: Mapping[str, Any], stamp_ns: int) -> Any:
        values = self.snapshot(logic_diag)
        drops = {k: int(v) for k, v in values.items() if k.startswith("drop.")}
        grown = sorted(k[5:] for k, v in drops.items() if v > self._last_drops.get(k, 0))
        self._last_drops = drops
        inputs = sum(v for k, v in values.items() if k.startswith("rate_hz.") and k != "rate_hz.outputs")
        dead = str(values.get("audio.dead_channels", ""))
        dead_message = f"microphones {dead} carry no signal (left out of the DoA)"
        if grown:
            level, message = WARN, "; ".join(["dropping input: " + ", ".join(grown)]
                                             + ([dead_message] if dead else []))
        elif inputs <= 0:
            level, message = STALE, "no input during the last period"
        elif dead:
            level, message = WARN, dead_message
        else:
            level, message = OK, "ok"
        kvs = [m.new_msg(KEY_VALUE, key=str(k), value=_fmt(v)) for k, v in sorted(values.items())]
        status = m.new_msg(DIAGNOSTIC_STATUS, level=level,
                           name=f"{self.node_name}: localizer", message=message,
                           hardware_id=self.hardware_id, values=kvs)
        return m.new_msg(DIAGNOSTIC_ARRAY, header=m.header(stamp_ns, ""), status=[status])


def diagnostics_to_dict(msg: Any) -> dict[str, dict[str, str]]:
    """``{status.name: {key: value, '__level': .., '__message': ..}}`` of a DiagnosticArray."""
    out: dict[str, dict[str, str]] = {}
    for st in msg.status:
        d = {kv.key: kv.value for kv in st.values}
        d["__level"] = str(int(st.level))
        d["__message"] = st.message
        out[st.name] = d
    return out
