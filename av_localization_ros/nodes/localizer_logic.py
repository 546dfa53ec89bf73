"""Localizer node logic, written once: ROS messages in, ROS messages out.

The shells (rclpy in ``localizer_node.py``, Cyclone DDS in ``dds_runner.py``) and the replay
tool only move messages and call these methods. Messages are duck-typed: rosbags message
classes and rclpy message classes carry the same field names; outputs are built as rosbags
classes (``bag.messages.TYPESTORE``), which serialise to the exact ROS 2 CDR bytes. A message
whose fields are not the expected ones (a bag recorded with another package's definition of
the same type name) is dropped and counted like any other malformed input.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..bag import messages as m
from ..core.camera import CalibrationError
from ..core.stream import StreamingLocalizer
from ..core.types import ImageFrame, PipelineOutput
from ..evaluation.plots import overlay_frame

log = logging.getLogger(__name__)

OUTPUT_NAMESPACE = "/av_localization"
OUTPUT_TOPICS = {
    "doa": "sensor_msgs/msg/PointCloud2",
    "doa_map": "sensor_msgs/msg/Image",
    "heatmap": "sensor_msgs/msg/Image",
    "overlay": "sensor_msgs/msg/Image",
    "speakers": "geometry_msgs/msg/PoseArray",
    "speaker_markers": "visualization_msgs/msg/MarkerArray",
}


def validate_params(params: dict[str, Any]) -> None:
    """Raise ValueError when the configuration cannot run (both node shells check it once, at
    start, rather than dropping every audio chunk later)."""
    from ..core.params import coerce_params
    from ..core.pipeline import Pipeline

    params = coerce_params(params)  # types, ranges, choices
    rate = int(params["sample_rate"]) or 16000
    Pipeline(params, rate, camera=None, heatmap_runner=None)  # array, grids, STFT, ...


def heatmap_runner_from_params(params: dict[str, Any]):
    """The audio-visual heatmap runner the params ask for, or None when disabled or unusable.

    A missing or mismatching model must not take the node down: the reason is logged as an
    error and the node runs the audio path alone.
    """
    if not params.get("heatmap.enabled", True):
        return None
    try:
        from ..av.runtime import HeatmapRunner  # onnxruntime / TensorRT load only when wanted

        return HeatmapRunner(model_dir=str(params.get("heatmap.model_dir") or "") or None,
                             backend=str(params.get("heatmap.backend", "auto")),
                             audio_rate_hz=float(params.get("heatmap.audio_rate_hz", 5.0)))
    except Exception as exc:  # missing model files, mismatching model, no runtime, ...
        log.error("audio-visual heatmap disabled: %s: %s", type(exc).__name__, exc)
        return None


class LocalizerLogic:
    def __init__(self, params: dict[str, Any], heatmap_runner=None, publish_overlay: bool = True):
        self.params = params
        self.array_frame = str(params["array_frame"])
        self.camera_frame = str(params["camera_frame"])
        self.stream = StreamingLocalizer(params, heatmap_runner=heatmap_runner)
        self.publish_overlay = publish_overlay
        self._camera_info = None
        self._tf_transform = None
        self._tf_messages: list = []
        self.output_sink = None  # optional callable(PipelineOutput), e.g. the replay's evaluator

    # --- inputs ---------------------------------------------------------------------------
    def on_audio_info(self, msg) -> None:
        try:  # also rejects compressed coding_format and unknown sample formats
            fmt = m.audio_info_fields(msg)
        except (ValueError, AttributeError, TypeError) as exc:
            self.stream.reject_audio_info("bad_audio_info", f"unusable AudioInfo: {exc}")
            return
        self.stream.on_audio_info(*fmt)

    def on_audio(self, msg) -> list[tuple[str, Any]]:
        fmt = self.stream.audio_format
        if fmt is None:
            self.stream.drop_audio_without_info()
            return []
        try:
            samples = m.msg_to_audio(msg.audio, fmt[0], fmt[2])
            stamp_ns = m.stamp_to_ns(msg.header.stamp)
        except (ValueError, AttributeError, TypeError) as exc:
            self.stream._drop("malformed_audio", str(exc))
            return []
        return self._encode(self.stream.on_audio(samples, stamp_ns))

    def on_tf_static(self, msg) -> None:
        self._tf_messages.append(msg)
        try:
            self._tf_transform = m.find_transform(self._tf_messages, self.array_frame,
                                                  self.camera_frame)
        except (CalibrationError, AttributeError, TypeError) as exc:  # e.g. a zero quaternion
            self._tf_messages.pop()  # it would fail every later lookup too
            self.stream._drop("bad_transform", f"unusable /tf_static message: {exc}")
            return
        self._update_camera()

    def on_camera_info(self, msg) -> None:
        try:
            key = (tuple(msg.k), int(msg.width), int(msg.height))
        except (ValueError, AttributeError, TypeError) as exc:
            self.stream._drop("bad_calibration", f"unusable CameraInfo: {exc!r}")
            return
        if self._camera_info is not None and key == (
                tuple(self._camera_info.k), self._camera_info.width, self._camera_info.height):
            return
        self._camera_info = msg
        self._update_camera()

    def _update_camera(self) -> None:
        if self._camera_info is None or self._tf_transform is None:
            return
        try:
            camera = m.camera_from_msgs(self._camera_info, self._tf_transform)
        except (CalibrationError, ValueError) as exc:
            self.stream._drop("bad_calibration", str(exc))
            camera = None
        self.stream.on_camera(camera)

    def on_image(self, msg, camera_info=None) -> list[tuple[str, Any]]:
        if camera_info is not None:
            self.on_camera_info(camera_info)
        # counted per image (no log line each): the image runs, but without fusion
        if self._camera_info is None:
            self.stream.drops["image_without_camera_info"] += 1
        elif self.stream.camera is None:
            self.stream.drops["image_without_transform" if self._tf_transform is None
                              else "image_with_unusable_calibration"] += 1
        try:
            image = m.msg_to_bgr(msg)
            stamp_ns = m.stamp_to_ns(msg.header.stamp)
        except (ValueError, AttributeError, TypeError) as exc:
            self.stream._drop("bad_image", str(exc))
            return []
        camera = self.stream.camera
        if camera is not None and (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            self.stream._drop("image_size_mismatch",
                              f"image is {image.shape[1]}x{image.shape[0]} but camera_info says "
                              f"{camera.width}x{camera.height}")
            return []
        frame = ImageFrame(image, stamp_ns)
        return self._encode(self.stream.on_image(frame))

    # --- outputs --------------------------------------------------------------------------
    def _encode(self, outputs: list[PipelineOutput]) -> list[tuple[str, Any]]:
        msgs: list[tuple[str, Any]] = []
        for out in outputs:
            if self.output_sink is not None:
                self.output_sink(out)
            stamp = out.stamp_ns
            msgs.append(("doa", m.doa_cloud_msg(list(out.doa.peaks), stamp, self.array_frame)))
            msgs.append(("doa_map", m.float_image_msg(out.doa.doa_map, stamp, self.array_frame)))
            msgs.append(("speakers", m.speakers_pose_array(list(out.tracks), stamp, self.array_frame)))
            msgs.append(("speaker_markers", m.speaker_markers(list(out.tracks), stamp, self.array_frame)))
            heat = out.fused_heatmap if out.fused_heatmap is not None else out.heatmap
            if heat is not None:  # the working resolution, fused or not (Pipeline)
                msgs.append(("heatmap", m.float_image_msg(np.ascontiguousarray(heat, np.float32),
                                                          stamp, self.camera_frame)))
            if self.publish_overlay and out.image is not None:
                over = overlay_frame(out.image.image, heat, list(out.tracks), self.stream.camera, None)
                msgs.append(("overlay", m.image_to_msg(over, stamp, self.camera_frame, "bgr8")))
        return msgs

    def diagnostics(self) -> dict[str, Any]:
        return self.stream.diagnostics()
