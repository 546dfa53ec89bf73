"""Mic-array capture as an rclpy node: PortAudio -> audio_common_msgs over ROS 2.

    ros2 run av_localization_ros capture_node --ros-args --params-file config/capture.yaml

Publishes ``audio/audio`` (AudioDataStamped, reliable, depth 100; each chunk stamped with the
time of its first sample -- see nodes/capture.py) and ``audio/audio_info`` (AudioInfo,
TRANSIENT_LOCAL, so a localizer started later still gets it), plus ``/diagnostics``
(overruns, dropped frames). All logic lives in :mod:`.capture`; this shell only moves bytes.
"""
from __future__ import annotations

import threading

from ..bag import messages as m
from .capture import (CAPTURE_PARAMETERS, AudioCapture, ChunkSequencer, capture_diagnostics,
                      chunk_msg, config_from_params, info_msg)
from .cdr import encode
from .diagnostics import DIAGNOSTIC_ARRAY
from .rclpy_main import spin_node

NODE_NAME = "av_capture"


def make_node_class():
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
    from rosidl_runtime_py.utilities import get_message

    class CaptureNode(Node):
        def __init__(self, **kwargs):
            super().__init__(NODE_NAME, **kwargs)
            for name, (default, description) in CAPTURE_PARAMETERS.items():
                self.declare_parameter(name, default, ParameterDescriptor(
                    description=description, read_only=True, dynamic_typing=True))
            values = {n: self.get_parameter(n).value for n in CAPTURE_PARAMETERS}
            self.config = config_from_params(values)  # ValueError: refuse to start
            self.frame_id = str(values["frame_id"])
            latched = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                                 reliability=QoSReliabilityPolicy.RELIABLE,
                                 durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
            self.info_pub = self.create_publisher(get_message(m.AUDIO_INFO), "audio/audio_info", latched)
            self.audio_pub = self.create_publisher(get_message(m.AUDIO_STAMPED), "audio/audio",
                                                   QoSProfile(depth=100, reliability=QoSReliabilityPolicy.RELIABLE))
            self.diag_pub = self.create_publisher(get_message(DIAGNOSTIC_ARRAY), "/diagnostics", 10)
            self.info_pub.publish(encode(info_msg(self.config), m.AUDIO_INFO))
            # Stamps: AudioCapture anchors its sample counter once (the first buffer's ADC time,
            # mapped to the system clock that ROS time uses on a live robot); every later stamp
            # is anchor + k / rate. A live device has no sim time, so the node clock is not used.
            self.capture = AudioCapture(self.config)
            self.capture.start()
            self.seq = ChunkSequencer()
            self.published = 0
            self._stop = threading.Event()
            # SIGINT shuts the context down before destroy_node(): stop publishing first
            self.context.on_shutdown(self._stop.set)
            self._thread = threading.Thread(target=self._pump, name="capture_pump", daemon=True)
            self._thread.start()
            self.create_timer(float(values["diagnostics_period_s"]), self._diagnostics)
            self.get_logger().info(
                f"capturing {self.config.channels} ch {self.config.sample_format} @ "
                f"{self.config.sample_rate} Hz from {self.capture.device_index}: {self.capture.device_name}")

        def _pump(self) -> None:
            while not self._stop.is_set():
                chunk = self.capture.read(timeout_s=0.2)
                if chunk is None:
                    if not self.capture.active:  # device gone: diagnostics report ERROR
                        self.get_logger().error("the audio stream stopped (device "
                                                "disconnected?); no more audio")
                        return
                    continue
                self.seq.push(chunk)
                try:
                    self.audio_pub.publish(encode(chunk_msg(chunk, self.frame_id),
                                                  m.AUDIO_STAMPED))
                except Exception:  # rclpy shut down under us (Ctrl-C): context invalid
                    if self._stop.is_set() or not self.context.ok():
                        return
                    raise
                self.published += 1

        def _diagnostics(self) -> None:
            msg = capture_diagnostics(self.get_name(), self.capture, self.seq, self.published)
            self.diag_pub.publish(encode(msg, DIAGNOSTIC_ARRAY))

        def destroy_node(self):
            self._stop.set()
            self._thread.join(timeout=2.0)
            self.capture.stop()
            return super().destroy_node()

    return CaptureNode


def main(args=None) -> int:
    return spin_node(make_node_class, NODE_NAME, args)


if __name__ == "__main__":
    raise SystemExit(main())
