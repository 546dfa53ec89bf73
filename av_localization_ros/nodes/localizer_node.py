"""The localizer as an rclpy node (ROS 2 Humble / Jazzy): a thin shell over LocalizerLogic.

    ros2 run av_localization_ros localizer_node --ros-args --params-file config/params.yaml

Inputs (relative names, so ``namespace`` and remapping apply):

* ``camera/image_raw`` + ``camera/camera_info``: ``message_filters.Subscriber`` with
  ``qos_profile_sensor_data``, paired by ``ApproximateTimeSynchronizer`` (slop 50 ms);
* ``audio/audio`` (audio_common_msgs/AudioDataStamped, reliable, depth 100) and
  ``audio/audio_info`` (TRANSIENT_LOCAL: it is latched; audio before it is dropped and counted);
* the array -> camera transform from TF (tf2_ros Buffer: ``/tf_static`` and ``/tf``).

Outputs: ``av_localization/{doa,doa_map,heatmap,overlay,speakers,speaker_markers}`` stamped with
the input data's stamps, ``/diagnostics``, and REP-155 voices where hri_msgs is installed.

Every parameter of ``core.params.PARAMETERS`` is declared with its description (read-only) and
validated at start: an invalid configuration stops the node with a clear error.

Messages cross into the logic as CDR: rclpy hands ``serialize_message`` bytes (or ``raw=True``
bytes) to the same decoder the DDS shell uses, and outputs are published as serialized bytes
(``Publisher.publish`` accepts ``bytes``), so both shells run byte-identical code paths.
"""
from __future__ import annotations

from ..bag import messages as m
from ..core.params import NODE_PARAMETERS, PARAMETERS, coerce_params
from .cdr import decode, encode
from .diagnostics import DIAGNOSTIC_ARRAY, DiagnosticsReporter
from .localizer_logic import heatmap_runner_from_params
from .localizer_logic import OUTPUT_TOPICS, LocalizerLogic, validate_params
from .rclpy_main import spin_node

NODE_NAME = "av_localizer"
OUTPUT_PREFIX = "av_localization"
SYNC_QUEUE = 10
SYNC_SLOP_S = 0.05


def _msg_class(msgtype: str):
    from rosidl_runtime_py.utilities import get_message

    return get_message(msgtype)


def make_node_class():
    """The rclpy Node subclass (built lazily so this module imports without ROS 2)."""
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node
    from rclpy.qos import (QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile,
                           QoSReliabilityPolicy, qos_profile_sensor_data)
    from rclpy.serialization import serialize_message

    class LocalizerNode(Node):
        def __init__(self, **kwargs):
            super().__init__(NODE_NAME, **kwargs)
            log = self.get_logger()
            # --- parameters: declared with descriptions, read-only, validated -------------
            for name, spec in PARAMETERS.items():
                self.declare_parameter(name, spec.default, ParameterDescriptor(
                    description=spec.description, read_only=True, dynamic_typing=True))
            for name, spec in NODE_PARAMETERS.items():
                # dynamic typing: "diagnostics_period_s: 1" in a params file is an integer
                self.declare_parameter(name, spec.default, ParameterDescriptor(
                    description=spec.description, read_only=True, dynamic_typing=True))
            raw = {name: self.get_parameter(name).value for name in PARAMETERS}
            params = coerce_params(raw)
            validate_params(params)
            self.params = params
            opt = coerce_params({name: self.get_parameter(name).value for name in NODE_PARAMETERS},
                                NODE_PARAMETERS)

            self.logic = LocalizerLogic(params, heatmap_runner=heatmap_runner_from_params(params),
                                        publish_overlay=bool(opt["publish_overlay"]))
            self.reporter = DiagnosticsReporter(self.get_name(), hardware_id=params["array_frame"])

            # --- outputs ------------------------------------------------------------------
            self.out_pubs = {
                suffix: self.create_publisher(_msg_class(msgtype), f"{OUTPUT_PREFIX}/{suffix}", 10)
                for suffix, msgtype in OUTPUT_TOPICS.items()}
            self.diag_pub = self.create_publisher(_msg_class(DIAGNOSTIC_ARRAY), "/diagnostics", 10)
            self.voices = None
            if opt["publish_voices"]:
                from .hri import RclpyHriPublisher

                self.voices = RclpyHriPublisher(self, params["array_frame"])

            # --- inputs -------------------------------------------------------------------
            latched = QoSProfile(depth=1, history=QoSHistoryPolicy.KEEP_LAST,
                                 reliability=QoSReliabilityPolicy.RELIABLE,
                                 durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
            audio_qos = QoSProfile(depth=100, history=QoSHistoryPolicy.KEEP_LAST,
                                   reliability=QoSReliabilityPolicy.RELIABLE)
            # names and types from the one input table (bag.messages.INPUT_TOPICS)
            for role, callback, qos in (("audio_info", self.logic.on_audio_info, latched),
                                        ("audio", self._on_audio, audio_qos)):
                name, msgtype = m.INPUT_TOPICS[role]
                self.create_subscription(_msg_class(msgtype), name,
                                         self._raw_cb(role, msgtype, callback), qos, raw=True)
            from message_filters import ApproximateTimeSynchronizer, Subscriber

            self._serialize = serialize_message
            image_name, image_type = m.INPUT_TOPICS["image"]
            info_name, info_type = m.INPUT_TOPICS["camera_info"]
            self.image_sub = Subscriber(self, _msg_class(image_type), image_name,
                                        qos_profile=qos_profile_sensor_data)
            self.info_sub = Subscriber(self, _msg_class(info_type), info_name,
                                       qos_profile=qos_profile_sensor_data)
            self.sync = ApproximateTimeSynchronizer([self.image_sub, self.info_sub],
                                                    queue_size=SYNC_QUEUE, slop=SYNC_SLOP_S)
            self.sync.registerCallback(self._on_image_pair)
            self.image_sub.registerCallback(lambda _msg: self.reporter.count("image"))
            self._paired = 0

            # --- frames from TF -----------------------------------------------------------
            from tf2_ros import Buffer, TransformListener

            self.tf_buffer = Buffer()
            self.tf_listener = TransformListener(self.tf_buffer, self)
            self._tf_key = None
            self.create_timer(0.5, self._poll_tf)

            self.create_timer(float(opt["diagnostics_period_s"]), self._publish_diagnostics)
            log.info(f"{NODE_NAME} ready: array frame {params['array_frame']}, camera frame "
                     f"{params['camera_frame']}, DoA {params['doa.method']}")

        # --- inputs -----------------------------------------------------------------------
        def _raw_cb(self, name: str, msgtype: str, fn):
            def cb(data: bytes):
                self.reporter.count(name)
                try:
                    msg = decode(data, msgtype)
                except ValueError:
                    self.reporter.count(f"drop.malformed_message.{name}")
                    return
                try:
                    fn(msg)
                except Exception as exc:  # bad input never kills the node
                    self.reporter.count(f"drop.callback_error.{name}")
                    self.get_logger().warning(f"{name}: {type(exc).__name__}: {exc}",
                                              throttle_duration_sec=5.0)
            return cb

        def _on_audio(self, msg) -> None:
            self._publish(self.logic.on_audio(msg))

        def _on_image_pair(self, image, camera_info) -> None:
            self._paired += 1
            try:
                img = decode(self._serialize(image), m.IMAGE)
                info = decode(self._serialize(camera_info), m.CAMERA_INFO)
                self._publish(self.logic.on_image(img, info))
            except Exception as exc:
                self.reporter.count("drop.callback_error.image")
                self.get_logger().warning(f"image: {type(exc).__name__}: {exc}",
                                          throttle_duration_sec=5.0)

        def _poll_tf(self) -> None:
            from rclpy.time import Time

            try:
                ts = self.tf_buffer.lookup_transform(self.params["array_frame"],
                                                     self.params["camera_frame"], Time())
            except Exception:  # not (yet) available: the pipeline runs audio-only
                return
            t, q = ts.transform.translation, ts.transform.rotation
            key = (t.x, t.y, t.z, q.x, q.y, q.z, q.w)
            if key == self._tf_key:
                return
            self._tf_key = key
            tf_msg = m.TYPESTORE.types[m.TF_MESSAGE](
                transforms=[decode(self._serialize(ts), m.TRANSFORM_STAMPED)])
            self.logic.on_tf_static(tf_msg)

        # --- outputs ----------------------------------------------------------------------
        def _publish(self, outputs) -> None:
            for suffix, msg in outputs:
                pub = self.out_pubs.get(suffix)
                if pub is not None:
                    pub.publish(encode(msg, OUTPUT_TOPICS[suffix]))
                if suffix == "speaker_markers" and self.voices is not None:
                    self.voices.publish(msg)

        def _publish_diagnostics(self) -> None:
            images = self.reporter.events.get("image", 0)
            unpaired = images - self._paired - SYNC_QUEUE
            if unpaired > self.reporter.events.get("drop.image_without_matching_camera_info", 0):
                self.reporter.events["drop.image_without_matching_camera_info"] = unpaired
            diag = self.reporter.build(self.logic.diagnostics(), self.logic.stream.data_stamp_ns)
            self.diag_pub.publish(encode(diag, DIAGNOSTIC_ARRAY))

    return LocalizerNode


def main(args=None) -> int:
    return spin_node(make_node_class, NODE_NAME, args)


if __name__ == "__main__":
    raise SystemExit(main())
