"""Replay evaluation: a rosbag2 (mcap or sqlite3) through the node logic, faster than real time.

Writes ``OUTDIR/bag`` (the output topics, stamped from the input data), and, when the bag holds
ground truth, ``OUTDIR/metrics.json`` plus pictures in ``OUTDIR/plots``.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..bag import messages as m
from ..bag.reader import bag_summary, read_bag
from ..bag.writer import BagWriter
from ..core.types import NS_PER_S, PipelineOutput
from ..nodes.localizer_logic import OUTPUT_NAMESPACE, LocalizerLogic
from .ground_truth import GROUND_TRUTH_TOPIC
from .metrics import FrameEstimate, evaluate
from . import plots

log = logging.getLogger(__name__)


@dataclass
class ReplayResult:
    out_dir: Path
    n_outputs: int
    audio_s: float
    wall_s: float
    metrics: dict[str, Any] | None
    diagnostics: dict[str, Any]

    @property
    def real_time_factor(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else math.inf


class _Collector:
    """Keeps what the metrics and pictures need from each PipelineOutput."""

    def __init__(self, keep_maps: int = 400, keep_frames: int = 300):
        self.estimates: list[FrameEstimate] = []
        self.maps: list[tuple] = []
        self.frames: list[PipelineOutput] = []
        self.keep_maps, self.keep_frames = keep_maps, keep_frames

    def __call__(self, out: PipelineOutput) -> None:
        self.estimates.append(FrameEstimate(out.stamp_ns, tuple(out.doa.peaks), tuple(out.tracks),
                                            out.doa.voice_active))
        if len(self.maps) < self.keep_maps:
            self.maps.append(out.doa)
        if out.image is not None and len(self.frames) < self.keep_frames:
            self.frames.append(out)


def _stamp_or_none(msg) -> int | None:
    try:
        return m.stamp_to_ns(msg.header.stamp)
    except (AttributeError, TypeError, ValueError):  # another definition of the type
        return None


def replay_bag(bag_path: str | Path, params: dict[str, Any], out_dir: str | Path, *,
               heatmap_runner=None, make_plots: bool = True, progress: bool = True,
               storage: str = "mcap", write_bag: bool = True) -> ReplayResult:
    bag_path, out_dir = Path(bag_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logic = LocalizerLogic(params, heatmap_runner=heatmap_runner, publish_overlay=False)
    collector = _Collector()
    logic.output_sink = collector
    truth = []
    summary = bag_summary(bag_path)
    total = sum(summary.get("counts", {}).values()) or None
    first_audio_ns = last_audio_ns = None
    out_bag = out_dir / "bag"
    if out_bag.exists():
        shutil.rmtree(out_bag)
    writer = BagWriter(out_bag, storage=storage) if write_bag else None
    reader = read_bag(bag_path)
    inputs = {m.bag_topic(role): (role, msgtype) for role, (_, msgtype) in m.INPUT_TOPICS.items()}
    inputs[GROUND_TRUTH_TOPIC] = ("ground_truth", m.STRING)
    t0 = time.perf_counter()
    try:
        for item in tqdm(reader, total=total, disable=not progress, unit="msg",
                         desc=f"replay {bag_path.name}"):
            topic, msg = item.topic, item.msg
            outputs = []
            role, expected = inputs.get(topic, (None, None))
            if expected is not None and item.msgtype != expected:
                # e.g. a driver's header-less AudioData on /audio/audio: no stamp to use
                logic.stream._drop("wrong_message_type",
                                   f"{topic} carries {item.msgtype}; expected {expected}")
                continue
            if role == "audio":
                outputs = logic.on_audio(msg)  # drops and counts a chunk it cannot read
                stamp = _stamp_or_none(msg)
                if stamp is not None:
                    first_audio_ns = stamp if first_audio_ns is None else first_audio_ns
                    last_audio_ns = stamp
            elif role == "image":
                outputs = logic.on_image(msg)
            elif role == "camera_info":
                logic.on_camera_info(msg)
            elif role == "audio_info":
                logic.on_audio_info(msg)
            elif role == "tf_static":
                logic.on_tf_static(msg)
            elif role == "ground_truth":
                try:
                    sample = m.ground_truth_from_msg(msg)
                    if sample.frame_id != logic.array_frame:  # positions would be misread
                        raise ValueError(f"ground truth in frame {sample.frame_id!r}; it must "
                                         f"be the array frame {logic.array_frame!r}")
                    truth.append(sample)
                except ValueError as exc:
                    logic.stream._drop("bad_ground_truth", str(exc))
            if writer is not None:
                for suffix, out_msg in outputs:
                    writer.write(f"{OUTPUT_NAMESPACE}/{suffix}", out_msg,
                                 m.stamp_to_ns(out_msg.header.stamp) if hasattr(out_msg, "header")
                                 else item.stamp_ns)
    finally:
        if writer is not None:
            writer.close()
    wall = time.perf_counter() - t0
    diagnostics = logic.diagnostics()
    report = getattr(reader, "report", None)
    if report is not None:
        diagnostics["bag.messages_read"] = report.messages_read
        diagnostics["bag.truncated"] = report.truncated
        diagnostics["bag.errors"] = list(report.errors)[:20]
    if logic.stream.audio_format is None:
        log.error("%s: no usable /audio/audio_info: audio was dropped (see diagnostics)", bag_path)
    audio_s = 0.0 if first_audio_ns is None else (last_audio_ns - first_audio_ns) / NS_PER_S
    metrics = None
    if truth:
        truth.sort(key=lambda s: s.stamp_ns)
        metrics = evaluate(collector.estimates, truth)
    result = ReplayResult(out_dir, len(collector.estimates), audio_s, wall, metrics, diagnostics)
    doc = {"bag": str(bag_path), "outputs": result.n_outputs, "audio_s": round(audio_s, 3),
           "wall_s": round(wall, 3), "real_time_factor": round(result.real_time_factor, 1),
           "metrics": metrics, "diagnostics": diagnostics}
    if metrics is not None:
        (out_dir / "metrics.json").write_text(json.dumps(doc, indent=2))
    (out_dir / "replay_report.json").write_text(json.dumps(doc, indent=2))
    if make_plots and collector.estimates:
        _write_plots(out_dir / "plots", collector, truth, logic)
    return result


def _write_plots(plot_dir: Path, collector: _Collector, truth, logic: LocalizerLogic) -> None:
    import numpy as np

    plot_dir.mkdir(parents=True, exist_ok=True)
    plots.plot_azimuth_timeline(collector.estimates, truth, plot_dir / "azimuth_timeline.png")
    if collector.maps:
        gt_by_stamp = {}
        for sample in truth:
            gt_by_stamp[sample.stamp_ns] = [np.rad2deg(s.azimuth) for s in sample.speakers if s.active]
        stamps = np.array(sorted(gt_by_stamp)) if gt_by_stamp else None
        snaps = []
        voiced = [d for d in collector.maps if d.voice_active] or collector.maps
        for d in voiced[:: max(1, len(voiced) // 6)][:6]:
            gt = []
            if stamps is not None:
                gt = gt_by_stamp[int(stamps[np.abs(stamps - d.stamp_ns).argmin()])]
            snaps.append((d.stamp_ns, d.doa_map, d.azimuths, d.elevations, list(d.peaks), gt))
        plots.plot_doa_map_snapshots(snaps, plot_dir / "doa_map_snapshots.png")
    if collector.frames:
        frames = []
        step = max(1, len(collector.frames) // 120)
        for out in collector.frames[::step]:
            heat = out.fused_heatmap if out.fused_heatmap is not None else out.heatmap
            frames.append(plots.overlay_frame(out.image.image, heat, list(out.tracks),
                                              logic.stream.camera, None))
        fps = 15.0
        if len(collector.frames) > 1:
            span = (collector.frames[-1].stamp_ns - collector.frames[0].stamp_ns) / NS_PER_S
            fps = max(1.0, (len(collector.frames) - 1) / span / step) if span > 0 else fps
        plots.write_overlay_gif(frames, plot_dir / "overlay.gif", fps)
