"""REP-155 (ROS4HRI) voices: ``/humans/voices/tracked`` (hri_msgs/IdsList) and ``voice_<id>`` TF
frames, derived from the localizer's ``speaker_markers`` output (ns ``speakers``, id = track ID).

The ROS-free part (:func:`voices_from_markers`, :func:`voice_messages`) builds rosbags messages;
:class:`RclpyHriPublisher` publishes them from an rclpy node only where ``hri_msgs`` imports
(REP-155 is optional: without hri_msgs the node runs and logs once). The DDS shell registers
``hri_msgs/msg/IdsList`` in its typestore (:func:`extend_typestore`) and needs no ROS install.

Voice IDs are the decimal track IDs; frame ``voice_<id>`` is a child of the array frame, at the
speaker's position (or 1.5 m along its direction when the range is unknown), stamped with the
output's (data) stamp.
"""
from __future__ import annotations

import logging
from typing import Any

from ..bag import messages as m
from .cdr import encode

log = logging.getLogger(__name__)

IDS_LIST = "hri_msgs/msg/IdsList"
#: hri_msgs/msg/IdsList.msg (ros4hri/hri_msgs)
IDS_LIST_DEFINITION = "std_msgs/Header header\nstring[] ids\n"
TRACKED_VOICES_TOPIC = "/humans/voices/tracked"
TF_TOPIC = "/tf"


def extend_typestore(store=m.TYPESTORE):
    """Register hri_msgs/msg/IdsList in ``store`` (additive; a no-op when present)."""
    if IDS_LIST not in store.fielddefs:
        from rosbags.typesys import get_types_from_msg

        store.register(get_types_from_msg(IDS_LIST_DEFINITION, IDS_LIST))
    return store


def voice_frame(voice_id: str) -> str:
    return f"voice_{voice_id}"


def voices_from_markers(markers_msg: Any) -> list[tuple[str, tuple[float, float, float]]]:
    """[(voice_id, (x, y, z))] of the 'speakers' markers of a speaker_markers MarkerArray."""
    out = []
    for mk in markers_msg.markers:
        if mk.ns == "speakers" and int(mk.action) == 0:
            p = mk.pose.position
            out.append((str(int(mk.id)), (float(p.x), float(p.y), float(p.z))))
    return out


def voice_messages(markers_msg: Any, array_frame: str, store=m.TYPESTORE) -> tuple[Any, Any]:
    """(IdsList, TFMessage) for one speaker_markers output, stamped with its stamp."""
    extend_typestore(store)
    T = store.types
    voices = voices_from_markers(markers_msg)
    stamp = markers_msg.markers[0].header.stamp if markers_msg.markers else m.ns_to_stamp(0)
    ids = T[IDS_LIST](header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=array_frame),
                      ids=[v for v, _ in voices])
    transforms = []
    for vid, (x, y, z) in voices:
        transforms.append(T[m.TRANSFORM_STAMPED](
            header=T["std_msgs/msg/Header"](stamp=stamp, frame_id=array_frame),
            child_frame_id=voice_frame(vid),
            transform=T["geometry_msgs/msg/Transform"](
                translation=T["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
                rotation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))))
    return ids, T[m.TF_MESSAGE](transforms=transforms)


class RclpyHriPublisher:
    """Publishes REP-155 voices from an rclpy node; ``available`` is False without hri_msgs."""

    def __init__(self, node, array_frame: str):
        self.available = False
        self.array_frame = array_frame
        try:
            from hri_msgs.msg import IdsList  # noqa: F401
            from tf2_ros import TransformBroadcaster
        except ImportError as exc:
            node.get_logger().info(f"REP-155 voices disabled: {exc}")
            return
        from rclpy.serialization import deserialize_message
        from geometry_msgs.msg import TransformStamped

        self._deserialize = deserialize_message
        self._transform_type = TransformStamped
        self._ids_type = IdsList
        self._pub = node.create_publisher(IdsList, TRACKED_VOICES_TOPIC, 10)
        self._tf = TransformBroadcaster(node)
        self.available = True

    def publish(self, markers_msg: Any) -> None:
        if not self.available:
            return
        ids, tf = voice_messages(markers_msg, self.array_frame)
        self._pub.publish(encode(ids, IDS_LIST))
        transforms = [self._deserialize(encode(t, m.TRANSFORM_STAMPED), self._transform_type)
                      for t in tf.transforms]
        if transforms:
            self._tf.sendTransform(transforms)
