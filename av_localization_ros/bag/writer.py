"""rosbag2 writing (mcap or sqlite3) through ``rosbags``, and the simulator's scene bags.

``BagWriter`` serialises messages of :data:`~av_localization_ros.bag.messages.TYPESTORE` with
CDR, creating one connection per (topic, type) on first use, and records the message
definitions (mcap schemas / sqlite3 ``message_definitions``) so any reader can decode the bag.
Latched topics (``/tf_static``, ``/audio/audio_info``) are offered as transient_local so that
``ros2 bag play`` republishes them latched.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from av_localization_ros.core.types import NS_PER_S
from av_localization_ros.evaluation.ground_truth import GROUND_TRUTH_TOPIC

from . import messages as m

TOPIC_AUDIO = m.bag_topic("audio")
TOPIC_AUDIO_INFO = m.bag_topic("audio_info")
TOPIC_IMAGE = m.bag_topic("image")
TOPIC_CAMERA_INFO = m.bag_topic("camera_info")
TOPIC_TF_STATIC = m.bag_topic("tf_static")
TOPIC_GROUND_TRUTH = GROUND_TRUTH_TOPIC

#: Topics whose publishers are transient_local (latched) in a live system.
LATCHED_TOPICS = frozenset({TOPIC_TF_STATIC, TOPIC_AUDIO_INFO})

#: custom_data keys written into metadata.yaml by :func:`write_scene_bag`.
CUSTOM_SCENE_CONFIG = "av_localization.scene_config"
CUSTOM_MIC_ARRAY = "av_localization.mic_array"

_STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
# rmw's "infinite" duration as recorded by rosbag2.
_INFINITE = QosTime(sec=2147483647, nsec=4294967295)


def qos_profile(latched: bool) -> Qos:
    """Reliable keep-last profile; transient_local (depth 1) when ``latched``."""
    return Qos(
        history=QosHistory.KEEP_LAST, depth=1 if latched else 10,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=_INFINITE, lifespan=_INFINITE, liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE, avoid_ros_namespace_conventions=False)


class BagWriter:
    """Writes a rosbag2 directory; the bag is created on construction (like ``open()``), so
    use it as a context manager or call :meth:`close` (which writes the index/metadata).

    >>> with BagWriter("out/scene", storage="mcap") as bag:
    ...     bag.write("/audio/audio", audio_to_msg(x, stamp_ns), stamp_ns)

    ``stamp_ns`` is the bag's receive (log) time; use the data stamp (never wall-clock time).
    ``path`` must not exist yet. ``version`` is the rosbag2 metadata version (8: read by
    Humble..Jazzy tooling; 9: Kilted and later). ``compress=True`` zstd-compresses mcap
    chunks (storage-level, transparent to every mcap reader).
    """

    def __init__(self, path: str | Path, storage: str = "mcap", *, version: int = 8,
                 typestore: Typestore | None = None,
                 latched_topics: frozenset[str] | set[str] = LATCHED_TOPICS,
                 compress: bool = False):
        if storage not in _STORAGES:
            raise ValueError(f"storage must be one of {sorted(_STORAGES)}, got {storage!r}")
        if version not in (8, 9):
            raise ValueError(f"rosbag2 writer version must be 8 or 9, got {version}")
        self.path = Path(path)
        self.storage = storage
        self.typestore = m.TYPESTORE if typestore is None else typestore
        self.latched_topics = frozenset(latched_topics)
        self._writer = Writer(self.path, version=version, storage_plugin=_STORAGES[storage])
        if compress:
            if storage != "mcap":
                raise ValueError("compress=True needs storage='mcap'")
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._connections: dict[tuple[str, str], Connection] = {}
        self._custom: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._writer.open()
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def close(self) -> None:
        """Finish the bag (idempotent)."""
        if self._open:
            for key, value in self._custom.items():
                self._writer.set_custom_data(key, value)
            self._writer.close()
            self._open = False

    def abort(self) -> None:
        """Stop without writing the index/metadata (the files stay, as after a crash)."""
        if self._open:
            self._open = False
            self._writer.abort()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def set_custom_data(self, key: str, value: str) -> None:
        """A string stored in metadata.yaml ``custom_data`` (written on close)."""
        if not isinstance(value, str):
            raise TypeError("custom_data values must be str")
        self._custom[key] = value

    def _connection(self, topic: str, msgtype: str) -> Connection:
        key = (topic, msgtype)
        conn = self._connections.get(key)
        if conn is None:
            conn = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore,
                offered_qos_profiles=[qos_profile(topic in self.latched_topics)])
            self._connections[key] = conn
        return conn

    def write(self, topic: str, msg: Any, stamp_ns: int, msgtype: str | None = None) -> None:
        """Serialise ``msg`` (type from ``msg.__msgtype__`` unless given) at log time
        ``stamp_ns``."""
        if not self._open:
            raise RuntimeError(f"BagWriter for {self.path} is closed")
        msgtype = msgtype or m.msgtype_of(msg)
        conn = self._connection(topic, msgtype)
        self._writer.write(conn, int(stamp_ns), self.typestore.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def write_raw(self, topic: str, msgtype: str, data: bytes | memoryview,
                  stamp_ns: int) -> None:
        """Write already CDR-serialised bytes (e.g. copying a bag without decoding)."""
        if not self._open:
            raise RuntimeError(f"BagWriter for {self.path} is closed")
        self._writer.write(self._connection(topic, msgtype), int(stamp_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


def sample_stamps_ns(start_ns: int, first_samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``start_ns + round(k * 1e9 / fs)`` for sample indices ``k``, in exact integer arithmetic
    (round half to even, as Python's ``round``)."""
    k = np.asarray(first_samples, dtype=np.int64)
    q, r = np.divmod(k * NS_PER_S, int(sample_rate))
    up = (2 * r > sample_rate) | ((2 * r == sample_rate) & (q % 2 == 1))
    return int(start_ns) + q + up.astype(np.int64)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def _scene_events(chunk_stamps: np.ndarray, recording: Any,
                  t0: int) -> Iterator[tuple[int, int, int]]:
    """(log time, order at equal time, index) of every scene message; built lazily later."""
    yield t0, 0, 0  # /tf_static (skipped later when there is no camera pose)
    yield t0, 1, 0  # /audio/audio_info
    for i, s in enumerate(chunk_stamps.tolist()):
        yield s, 2, i
    for i, frame in enumerate(recording.images):
        yield int(frame.stamp_ns), 3, i
    for i, gt in enumerate(recording.ground_truth):
        yield int(gt.stamp_ns), 4, i


def write_scene_bag(recording: Any, path: str | Path, storage: str = "mcap",
                    sample_format: str = "S16LE", chunk_s: float = 0.02) -> dict[str, int]:
    """Write a simulator ``SceneRecording`` as a rosbag2 input bag; returns messages per topic.

    Topics: ``/tf_static`` (mic_array -> camera_optical_frame, when there is a camera) and
    ``/audio/audio_info`` first, then ``/audio/audio`` chunks of ``chunk_s`` (stamp = time of
    the chunk's first sample ``k``: ``start_ns + round(k * 1e9 / fs)``), ``/camera/image_raw``
    (bgr8) with ``/camera/camera_info`` at the same stamp, and ``/ground_truth/speakers``,
    all in time order with log time = data stamp. The scene config and the mic geometry go
    to metadata.yaml ``custom_data`` (JSON).
    """
    audio = np.asarray(recording.audio)
    if audio.ndim != 2:
        raise ValueError(f"recording.audio must be (M, N), got {audio.shape}")
    fs = int(recording.sample_rate)
    chunk = max(1, int(round(chunk_s * fs)))
    n_ch, n = audio.shape
    camera = recording.camera
    pose = recording.camera_pose_in_array
    if pose is None and camera is not None:
        pose = (camera.r_array_optical, camera.t_array_optical)
    t0 = min([int(recording.start_ns)] + [int(f.stamp_ns) for f in recording.images]
             + [int(g.stamp_ns) for g in recording.ground_truth])
    chunk_starts = np.arange(0, n, chunk, dtype=np.int64)
    chunk_stamps = sample_stamps_ns(recording.start_ns, chunk_starts, fs)

    events = sorted(_scene_events(chunk_stamps, recording, t0))
    with BagWriter(path, storage=storage) as bag:
        bag.set_custom_data(CUSTOM_SCENE_CONFIG,
                            json.dumps(recording.config or {}, default=_json_default))
        mic = recording.mic_array
        bag.set_custom_data(CUSTOM_MIC_ARRAY, json.dumps({
            "name": getattr(mic, "name", "custom"),
            "frame_id": m.ARRAY_FRAME,
            "positions": np.asarray(mic.positions, dtype=float).tolist()}))
        for stamp, kind, i in events:
            if kind == 0:
                if pose is not None:
                    bag.write(TOPIC_TF_STATIC,
                              m.tf_static_msg(m.ARRAY_FRAME, m.CAMERA_FRAME, pose[0], pose[1],
                                              stamp), stamp)
            elif kind == 1:
                bag.write(TOPIC_AUDIO_INFO, m.audio_info_msg(n_ch, fs, sample_format), stamp)
            elif kind == 2:
                k = int(chunk_starts[i])
                block = audio[:, k:k + chunk]
                bag.write(TOPIC_AUDIO, m.audio_to_msg(block, int(chunk_stamps[i]), m.ARRAY_FRAME,
                                                      sample_format), stamp)
            elif kind == 3:  # CameraInfo first: a reader taking the image finds its calibration
                frame = recording.images[i]
                if camera is not None:
                    bag.write(TOPIC_CAMERA_INFO, m.camera_info_msg(camera, stamp, m.CAMERA_FRAME),
                              stamp)
                bag.write(TOPIC_IMAGE, m.image_to_msg(frame.image, stamp, m.CAMERA_FRAME,
                                                      "bgr8"), stamp)
            else:
                bag.write(TOPIC_GROUND_TRUTH, m.ground_truth_msg(recording.ground_truth[i]),
                          stamp)
        return dict(bag.counts)
