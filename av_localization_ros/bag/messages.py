"""The package's ROS 2 typestore and every numpy <-> message conversion.

Everything here is a pure function on message objects of the ``rosbags`` typestore
:data:`TYPESTORE` (ROS 2 Humble plus ``audio_common_msgs``). The scene simulator, the bag
writer/reader, the replay tool and the DDS/rclpy nodes all build and parse messages through
these functions, so a message published live and one read from a bag decode identically.

Conventions (docs/ARCHITECTURE.md): stamps are ``int`` nanoseconds, audio is float32
``(n_channels, n_samples)`` in [-1, 1], images are BGR uint8 ``(H, W, 3)``, the array frame is
``mic_array`` (REP-103) and the camera frame ``camera_optical_frame``.

Parsing functions only use attribute access, so they also accept messages deserialised with a
bag's own (possibly newer) definitions, or rclpy message objects with the same field names.
"""
from __future__ import annotations

import colorsys
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.base import normalize_fieldname
from rosbags.typesys.store import Typestore

from av_localization_ros.core.camera import (
    CalibrationError,
    CameraGeometry,
    matrix_to_quaternion,
    quaternion_to_matrix,
)
from av_localization_ros.core.types import (
    NS_PER_S,
    DoaPeak,
    TrackState,
    direction_vector,
    vector_to_azel,
)
from av_localization_ros.evaluation.ground_truth import GroundTruthSample

# --------------------------------------------------------------------------------------------
# Typestore
# --------------------------------------------------------------------------------------------

#: audio_common_msgs as shipped by ros-drivers/audio_common (ROS 2 branch).
AUDIO_COMMON_MSGS: dict[str, str] = {
    "audio_common_msgs/msg/AudioData": "uint8[] data\n",
    "audio_common_msgs/msg/AudioDataStamped": (
        "std_msgs/Header header\n"
        "audio_common_msgs/AudioData audio\n"
    ),
    "audio_common_msgs/msg/AudioInfo": (
        "# Number of channels\n"
        "uint8 channels\n"
        "# Sampling rate [Hz]\n"
        "uint32 sample_rate\n"
        "# Audio format (e.g. S16LE)\n"
        "string sample_format\n"
        "# Amount of audio data per second [bits/s]\n"
        "uint32 bitrate\n"
        "# Audio coding format (e.g. WAVE, MP3)\n"
        "string coding_format\n"
    ),
}


def make_typestore() -> Typestore:
    """ROS 2 Humble types plus ``audio_common_msgs`` (registered from their .msg text)."""
    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict = {}
    for name, text in AUDIO_COMMON_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


TYPESTORE: Typestore = make_typestore()

# Message type names used by the package.
AUDIO_STAMPED = "audio_common_msgs/msg/AudioDataStamped"
AUDIO_DATA = "audio_common_msgs/msg/AudioData"
AUDIO_INFO = "audio_common_msgs/msg/AudioInfo"
IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINT_CLOUD2 = "sensor_msgs/msg/PointCloud2"
POINT_FIELD = "sensor_msgs/msg/PointField"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TRANSFORM_STAMPED = "geometry_msgs/msg/TransformStamped"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
MARKER = "visualization_msgs/msg/Marker"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"
STRING = "std_msgs/msg/String"

#: The input topics, by role: (name, message type). The nodes subscribe to the names as written:
#: relative names resolve in the node's namespace (so a launch file can namespace and remap
#: them), ``/tf_static`` is global. Bags (the simulator's, the replay's input) record them at
#: the root namespace, see :func:`bag_topic`.
INPUT_TOPICS: dict[str, tuple[str, str]] = {
    "image": ("camera/image_raw", IMAGE),
    "camera_info": ("camera/camera_info", CAMERA_INFO),
    "audio": ("audio/audio", AUDIO_STAMPED),
    "audio_info": ("audio/audio_info", AUDIO_INFO),
    "tf_static": ("/tf_static", TF_MESSAGE),
}


def bag_topic(role: str) -> str:
    """The input topic of ``role`` ("image", "audio", ...) at the root namespace, as a bag
    records it."""
    name = INPUT_TOPICS[role][0]
    return name if name.startswith("/") else "/" + name


ARRAY_FRAME = "mic_array"
CAMERA_FRAME = "camera_optical_frame"


class MessageFormatError(ValueError):
    """A message's content does not match what its fields declare, or is unsupported."""


class AudioFormatError(MessageFormatError):
    """Unsupported sample format or a malformed audio payload."""


class ImageFormatError(MessageFormatError):
    """Unsupported image encoding or inconsistent size/step/data."""


class CloudFormatError(MessageFormatError):
    """A PointCloud2 without the expected fields or with an inconsistent layout."""


_NUMPY_BASE = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


def _default_value(desc: tuple, store: Typestore) -> Any:
    kind, args = desc
    if kind == Nodetype.BASE:
        name = args[0]
        if name == "string":
            return ""
        if name == "bool":
            return False
        if name.startswith("float"):
            return 0.0
        return 0
    if kind == Nodetype.NAME:
        return new_msg(args, store=store)
    (sub_kind, sub_args), count = args
    n = count if kind == Nodetype.ARRAY else 0
    if sub_kind == Nodetype.BASE and sub_args[0] in _NUMPY_BASE:
        return np.zeros(n, dtype=_NUMPY_BASE[sub_args[0]])
    return [_default_value((sub_kind, sub_args), store) for _ in range(n)]


def new_msg(msgtype: str, store: Typestore | None = None, **fields: Any) -> Any:
    """Instance of ``msgtype`` with every field not given set to its ROS default.

    Robust to definition differences between distributions (e.g. Marker's texture fields).
    """
    store = TYPESTORE if store is None else store
    fielddefs = [(normalize_fieldname(name), desc) for name, desc in store.fielddefs[msgtype][1]]
    unknown = set(fields) - {name for name, _ in fielddefs}
    if unknown:
        raise TypeError(f"{msgtype} has no field(s) {sorted(unknown)}")
    values = {name: fields[name] if name in fields else _default_value(desc, store)
              for name, desc in fielddefs}
    return store.types[msgtype](**values)


def msgtype_of(msg: Any) -> str:
    """The ROS type name (``pkg/msg/Name``) of a rosbags message object."""
    try:
        return msg.__msgtype__
    except AttributeError:
        raise TypeError(f"{type(msg).__name__} is not a rosbags message") from None


# --------------------------------------------------------------------------------------------
# Time and header
# --------------------------------------------------------------------------------------------

def ns_to_stamp(ns: int) -> Any:
    """builtin_interfaces/Time of integer nanoseconds (nanosec always in [0, 1e9))."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return TYPESTORE.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def stamp_to_ns(stamp: Any) -> int:
    """Integer nanoseconds of a builtin_interfaces/Time (or anything with sec/nanosec)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header(stamp_ns: int, frame_id: str) -> Any:
    return TYPESTORE.types["std_msgs/msg/Header"](stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _duration(seconds: float) -> Any:
    sec, nanosec = divmod(int(round(seconds * NS_PER_S)), NS_PER_S)
    return TYPESTORE.types["builtin_interfaces/msg/Duration"](sec=sec, nanosec=nanosec)


def _as_uint8(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` payload as a 1-D uint8 array, without copying where possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            data = data.astype(np.uint8)
        return np.ascontiguousarray(data).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).reshape(-1)  # list[int] from foreign code (slow)


# --------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------

# sample_format -> (little-endian numpy dtype, full-scale value or None for float, bits)
SAMPLE_FORMATS: dict[str, tuple[str, float | None, int]] = {
    "S16LE": ("<i2", 32767.0, 16),
    "S32LE": ("<i4", 2147483647.0, 32),
    "F32LE": ("<f4", None, 32),
}


def _sample_format(sample_format: str) -> tuple[str, float | None, int]:
    try:
        return SAMPLE_FORMATS[str(sample_format).upper()]
    except KeyError:
        raise AudioFormatError(
            f"unsupported audio sample_format {sample_format!r}; "
            f"supported: {', '.join(SAMPLE_FORMATS)} (interleaved PCM)") from None


def audio_info_msg(channels: int, sample_rate: int, sample_format: str = "S16LE") -> Any:
    """audio_common_msgs/AudioInfo (coding_format 'wave', bitrate = channels * rate * bits)."""
    _, _, bits = _sample_format(sample_format)
    if not 1 <= int(channels) <= 255:
        raise AudioFormatError(f"channels must be in 1..255 (uint8), got {channels}")
    if int(sample_rate) <= 0:
        raise AudioFormatError(f"sample_rate must be positive, got {sample_rate}")
    return TYPESTORE.types[AUDIO_INFO](
        channels=int(channels), sample_rate=int(sample_rate),
        sample_format=str(sample_format).upper(),
        bitrate=int(channels) * int(sample_rate) * bits, coding_format="wave")


def audio_to_msg(samples: np.ndarray, stamp_ns: int, frame_id: str = ARRAY_FRAME,
                 sample_format: str = "S16LE") -> Any:
    """AudioDataStamped of ``(M, N)`` float samples: interleaved little-endian PCM.

    ``stamp_ns`` is the time of the first sample. Integer formats clip to [-1, 1] and round
    ``x * full_scale`` (S16LE: 32767); F32LE is bit-exact.
    """
    dtype, scale, _ = _sample_format(sample_format)
    x = np.asarray(samples)
    if x.ndim != 2 or x.shape[0] < 1:
        raise AudioFormatError(f"audio must be (n_channels, n_samples), got shape {x.shape}")
    if x.shape[0] > 255:
        raise AudioFormatError(f"at most 255 channels fit AudioInfo.channels, got {x.shape[0]}")
    if scale is None:
        pcm = np.ascontiguousarray(x.T, dtype=dtype)
    else:
        if not np.all(np.isfinite(x)):
            raise AudioFormatError("audio contains NaN or inf; cannot quantise to integer PCM")
        xf = np.clip(x.T.astype(np.float64), -1.0, 1.0)  # float64: exact x * scale
        pcm = np.ascontiguousarray(np.rint(xf * scale), dtype=dtype)
    data = pcm.reshape(-1).view(np.uint8)
    audio = TYPESTORE.types[AUDIO_DATA](data=data)
    return TYPESTORE.types[AUDIO_STAMPED](header=header(stamp_ns, frame_id), audio=audio)


def msg_to_audio(msg: Any, channels: int, sample_format: str = "S16LE") -> np.ndarray:
    """``(M, N)`` float32 samples of an AudioDataStamped or AudioData.

    Raises AudioFormatError for an unknown format or a payload whose length is not a multiple
    of ``channels * bytes_per_sample``.
    """
    dtype, scale, bits = _sample_format(sample_format)
    channels = int(channels)
    if channels < 1:
        raise AudioFormatError(f"channels must be >= 1, got {channels}")
    payload = msg.audio.data if hasattr(msg, "audio") else msg.data
    raw = _as_uint8(payload)
    frame_bytes = channels * bits // 8
    if raw.size % frame_bytes:
        raise AudioFormatError(
            f"audio payload of {raw.size} bytes is not a multiple of {frame_bytes} "
            f"({channels} channels x {bits // 8} bytes of {sample_format}); "
            "wrong channel count / sample_format or a corrupt message")
    pcm = np.frombuffer(raw, dtype=dtype).reshape(-1, channels)
    out = np.empty((channels, pcm.shape[0]), dtype=np.float32)
    if scale is None:
        out[...] = pcm.T
    elif dtype == "<i2":
        np.multiply(pcm.T, np.float32(1.0 / scale), out=out, casting="unsafe")
        np.clip(out, -1.0, 1.0, out=out)
    else:
        out[...] = np.clip(pcm.T * (1.0 / scale), -1.0, 1.0)
    return out


def audio_info_fields(msg: Any) -> tuple[int, int, str]:
    """``(channels, sample_rate, sample_format)`` of an AudioInfo, validated."""
    fmt = str(msg.sample_format).upper()
    _sample_format(fmt)
    coding = str(getattr(msg, "coding_format", "wave") or "wave").lower()
    if coding not in ("wave", "wav", "pcm", "raw"):
        raise AudioFormatError(f"unsupported audio coding_format {msg.coding_format!r} "
                               "(only uncompressed PCM 'wave')")
    if int(msg.channels) < 1 or int(msg.sample_rate) <= 0:
        raise AudioFormatError(f"bad AudioInfo: {msg.channels} channels at {msg.sample_rate} Hz")
    return int(msg.channels), int(msg.sample_rate), fmt


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

_COLOUR_ENCODINGS = {"bgr8": 3, "rgb8": 3, "bgra8": 4, "rgba8": 4, "mono8": 1}


def _bgr_to_mono(img: np.ndarray) -> np.ndarray:
    w = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # ITU-R BT.601 on B, G, R
    return np.clip(np.rint(img.astype(np.float32) @ w), 0, 255).astype(np.uint8)


def image_to_msg(img: np.ndarray, stamp_ns: int, frame_id: str = CAMERA_FRAME,
                 encoding: str = "bgr8") -> Any:
    """sensor_msgs/Image from an array in the package convention.

    ``img`` is BGR uint8 ``(H, W, 3)`` for 'bgr8'/'rgb8' (converted for rgb8), BGR ``(H, W, 3)``
    or grey ``(H, W)`` uint8 for 'mono8', and ``(H, W)`` float32 for '32FC1'.
    """
    a = np.asarray(img)
    if encoding == "32FC1":
        return float_image_msg(a, stamp_ns, frame_id)
    if encoding not in ("bgr8", "rgb8", "mono8"):
        raise ImageFormatError(f"cannot encode images as {encoding!r} "
                               "(supported: bgr8, rgb8, mono8, 32FC1)")
    if a.dtype != np.uint8:
        raise ImageFormatError(f"{encoding} needs uint8 pixels, got {a.dtype}")
    if encoding == "mono8":
        if a.ndim == 3 and a.shape[2] == 3:
            a = _bgr_to_mono(a)
        elif a.ndim != 2:
            raise ImageFormatError(f"mono8 needs (H, W) or BGR (H, W, 3), got {a.shape}")
    else:
        if a.ndim != 3 or a.shape[2] != 3:
            raise ImageFormatError(f"{encoding} needs a BGR (H, W, 3) array, got {a.shape}")
        if encoding == "rgb8":
            a = a[..., ::-1]
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageFormatError(f"empty image {a.shape}")
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    return TYPESTORE.types[IMAGE](
        header=header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
        is_bigendian=0, step=a.nbytes // h, data=a.reshape(-1))  # strides[0] can be a
    # parent's row stride: a one-row column crop is contiguous without a copy


def _image_rows(msg: Any, bytes_per_pixel: int) -> np.ndarray:
    """``(H, W * bytes_per_pixel)`` uint8 view of an image payload, step padding removed."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageFormatError(f"empty image ({w}x{h})")
    row = w * bytes_per_pixel
    if step < row:
        raise ImageFormatError(f"step {step} < width {w} x {bytes_per_pixel} bytes per pixel "
                               f"for {msg.encoding!r}")
    raw = _as_uint8(msg.data)
    if raw.size != step * h:
        raise ImageFormatError(f"image data has {raw.size} bytes, expected step x height = "
                               f"{step} x {h} = {step * h}")
    return raw.reshape(h, step)[:, :row]


def msg_to_bgr(msg: Any) -> np.ndarray:
    """BGR uint8 ``(H, W, 3)`` (a fresh, writable array) from bgr8/rgb8/bgra8/rgba8/mono8."""
    enc = str(msg.encoding)
    if enc not in _COLOUR_ENCODINGS:
        raise ImageFormatError(f"unsupported image encoding {enc!r} "
                               f"(supported: {', '.join(_COLOUR_ENCODINGS)})")
    n = _COLOUR_ENCODINGS[enc]
    px = _image_rows(msg, n).reshape(int(msg.height), int(msg.width), n)
    if enc == "mono8":
        return np.repeat(px, 3, axis=2)
    if enc in ("rgb8", "rgba8"):
        return np.ascontiguousarray(px[..., 2::-1])
    return np.array(px[..., :3], order="C")


def float_image_msg(array: np.ndarray, stamp_ns: int, frame_id: str = CAMERA_FRAME) -> Any:
    """32FC1 Image (little-endian, is_bigendian 0, step 4 W) of an ``(H, W)`` array."""
    a = np.asarray(array)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageFormatError(f"32FC1 needs a non-empty (H, W) array, got {a.shape}")
    a = np.ascontiguousarray(a, dtype="<f4")
    h, w = a.shape
    return TYPESTORE.types[IMAGE](
        header=header(stamp_ns, frame_id), height=h, width=w, encoding="32FC1",
        is_bigendian=0, step=4 * w, data=a.reshape(-1).view(np.uint8))


def msg_to_float_image(msg: Any) -> np.ndarray:
    """``(H, W)`` float32 of a 32FC1 image (either endianness)."""
    if str(msg.encoding) != "32FC1":
        raise ImageFormatError(f"expected a 32FC1 image, got {msg.encoding!r}")
    rows = _image_rows(msg, 4)
    dtype = ">f4" if int(msg.is_bigendian) else "<f4"
    return np.ascontiguousarray(rows).view(dtype).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Camera calibration and transforms
# --------------------------------------------------------------------------------------------

def camera_info_msg(camera: CameraGeometry, stamp_ns: int,
                    frame_id: str = CAMERA_FRAME) -> Any:
    """CameraInfo of a pinhole camera: plumb_bob, zero distortion, R = I, P = [K | 0]."""
    k = np.asarray(camera.k, dtype=np.float64).reshape(3, 3)
    p = np.hstack([k, np.zeros((3, 1))])
    return new_msg(
        CAMERA_INFO, header=header(stamp_ns, frame_id), height=int(camera.height),
        width=int(camera.width), distortion_model="plumb_bob", d=np.zeros(5),
        k=k.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=p.reshape(-1))


def _as_rt(tf: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(tf, tuple) and len(tf) == 2:
        r = np.asarray(tf[0], dtype=np.float64).reshape(3, 3)
        return r, np.asarray(tf[1], dtype=np.float64).reshape(3)
    return transform_to_rt(tf)


def camera_from_msgs(info_msg: Any, tf_transform: Any) -> CameraGeometry:
    """CameraGeometry from a CameraInfo and the array -> optical-frame transform.

    ``tf_transform`` is a TransformStamped / Transform (parent = array frame, child = optical
    frame) or an ``(R, t)`` pair as returned by :func:`find_transform`. Raises CalibrationError
    for a missing transform, an all-zero / non-pinhole K or a zero image size.
    """
    if tf_transform is None:
        raise CalibrationError(
            f"no transform {ARRAY_FRAME} -> {CAMERA_FRAME} (is /tf_static recorded?)")
    k = np.asarray(info_msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9 or not np.all(np.isfinite(k)) or not np.any(k):
        raise CalibrationError("CameraInfo.k is all zero / invalid: the camera is uncalibrated")
    k = k.reshape(3, 3)
    if not np.allclose(k[2], [0.0, 0.0, 1.0], atol=1e-9) or k[1, 0] != 0.0:
        raise CalibrationError(f"CameraInfo.k is not a pinhole matrix: {k.tolist()}")
    try:
        r, t = _as_rt(tf_transform)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CalibrationError(f"unusable array -> camera transform: {exc}") from exc
    return CameraGeometry(k=k, width=int(info_msg.width), height=int(info_msg.height),
                          r_array_optical=r, t_array_optical=t)


def tf_static_msg(parent: str, child: str, r: np.ndarray, t: np.ndarray,
                  stamp_ns: int) -> Any:
    """tf2_msgs/TFMessage with one transform: ``p_parent = R p_child + t``."""
    r = np.asarray(r, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    if not (np.allclose(r @ r.T, np.eye(3), atol=1e-6) and np.linalg.det(r) > 0):
        raise ValueError("R must be a proper rotation matrix")
    if not np.all(np.isfinite(t)):
        raise ValueError("t must be finite")
    qx, qy, qz, qw = matrix_to_quaternion(r)
    T = TYPESTORE.types
    transform = T["geometry_msgs/msg/Transform"](
        translation=T["geometry_msgs/msg/Vector3"](x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=T["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz),
                                                   w=float(qw)))
    stamped = T[TRANSFORM_STAMPED](header=header(stamp_ns, parent), child_frame_id=child,
                                   transform=transform)
    return T[TF_MESSAGE](transforms=[stamped])


def transform_to_rt(transform_msg: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(R (3, 3), t (3,))`` of a TransformStamped or Transform (child pose in parent)."""
    tr = getattr(transform_msg, "transform", transform_msg)
    q, v = tr.rotation, tr.translation
    r = quaternion_to_matrix(q.x, q.y, q.z, q.w)
    return r, np.array([v.x, v.y, v.z], dtype=np.float64)


def _frame(name: str) -> str:
    return str(name).lstrip("/")


def find_transform(tf_msgs: Iterable[Any], parent: str,
                   child: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Pose ``(R, t)`` of ``child`` in ``parent`` from TFMessages (or TransformStamped).

    Uses the latest transform per frame pair, inverts transforms recorded the other way round
    and chains through intermediate frames (e.g. mic_array -> camera_link -> optical). Returns
    None when the frames are not connected.
    """
    parent, child = _frame(parent), _frame(child)
    if parent == child:
        return np.eye(3), np.zeros(3)
    edges: dict[tuple[str, str], Any] = {}
    for m in tf_msgs:
        for ts in getattr(m, "transforms", [m]):
            edges[(_frame(ts.header.frame_id), _frame(ts.child_frame_id))] = ts
    graph: dict[str, list[tuple[str, tuple[str, str], bool]]] = {}
    for (a, b) in edges:
        graph.setdefault(a, []).append((b, (a, b), False))
        graph.setdefault(b, []).append((a, (a, b), True))
    # Breadth-first search from parent; pose of each reached frame in parent.
    poses: dict[str, tuple[np.ndarray, np.ndarray]] = {parent: (np.eye(3), np.zeros(3))}
    queue = deque([parent])
    while queue:
        frame = queue.popleft()
        r0, t0 = poses[frame]
        for nxt, key, inverse in graph.get(frame, []):
            if nxt in poses:
                continue
            r, t = transform_to_rt(edges[key])
            if inverse:
                r, t = r.T, -r.T @ t
            poses[nxt] = (r0 @ r, r0 @ t + t0)
            if nxt == child:
                return poses[nxt]
            queue.append(nxt)
    return None


# --------------------------------------------------------------------------------------------
# Outputs: DoA cloud, speakers, markers
# --------------------------------------------------------------------------------------------

_POINTFIELD_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
DOA_CLOUD_FIELDS = ("x", "y", "z", "confidence")
DOA_POINT_STEP = 16


def doa_cloud_msg(peaks: Sequence[DoaPeak], stamp_ns: int, frame_id: str = ARRAY_FRAME) -> Any:
    """PointCloud2 (height 1) of unit DoA directions: float32 x, y, z, confidence at offsets
    0, 4, 8, 12; point_step 16; little-endian; is_dense."""
    n = len(peaks)
    pts = np.zeros((n, 4), dtype="<f4")
    if n:
        pts[:, :3] = direction_vector([p.azimuth for p in peaks], [p.elevation for p in peaks])
        pts[:, 3] = [p.confidence for p in peaks]
    T = TYPESTORE.types
    fields = [T[POINT_FIELD](name=name, offset=4 * i, datatype=7, count=1)
              for i, name in enumerate(DOA_CLOUD_FIELDS)]
    return T[POINT_CLOUD2](
        header=header(stamp_ns, frame_id), height=1, width=n, fields=fields,
        is_bigendian=False, point_step=DOA_POINT_STEP, row_step=DOA_POINT_STEP * n,
        data=pts.reshape(-1).view(np.uint8), is_dense=True)


def cloud_fields(msg: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Selected single-count fields of a PointCloud2 as 1-D float64 arrays (any layout)."""
    by_name = {f.name: f for f in msg.fields}
    endian = ">" if msg.is_bigendian else "<"
    n_points = int(msg.width) * int(msg.height)
    step, row_step = int(msg.point_step), int(msg.row_step)
    raw = _as_uint8(msg.data)
    if n_points == 0:
        return {name: np.zeros(0) for name in names}
    if step <= 0 or row_step < step * int(msg.width) or raw.size < row_step * int(msg.height):
        raise CloudFormatError(f"inconsistent PointCloud2 layout: {n_points} points, point_step "
                               f"{step}, row_step {row_step}, {raw.size} data bytes")
    rows = raw[:row_step * int(msg.height)].reshape(int(msg.height), row_step)
    rows = np.ascontiguousarray(rows[:, :step * int(msg.width)]).reshape(n_points, step)
    out = {}
    for name in names:
        f = by_name.get(name)
        if f is None:
            raise CloudFormatError(f"PointCloud2 has no field {name!r} "
                                   f"(fields: {[x.name for x in msg.fields]})")
        code = _POINTFIELD_DTYPES.get(int(f.datatype))
        if code is None:
            raise CloudFormatError(f"field {name!r} has unknown datatype {f.datatype}")
        dt = np.dtype(endian + code)
        if int(f.offset) + dt.itemsize > step:
            raise CloudFormatError(f"field {name!r} at offset {f.offset} overruns point_step")
        col = np.ascontiguousarray(rows[:, int(f.offset):int(f.offset) + dt.itemsize])
        out[name] = col.view(dt).reshape(-1).astype(np.float64)
    return out


def cloud_to_peaks(msg: Any) -> list[DoaPeak]:
    """DoaPeaks of a DoA PointCloud2 (x, y, z directions; confidence defaults to 1)."""
    has_conf = any(f.name == "confidence" for f in msg.fields)
    cols = cloud_fields(msg, ("x", "y", "z", "confidence") if has_conf else ("x", "y", "z"))
    v = np.stack([cols["x"], cols["y"], cols["z"]], axis=-1)
    az, el = vector_to_azel(v)
    conf = cols["confidence"] if has_conf else np.ones(len(v))
    return [DoaPeak(azimuth=float(a), elevation=float(e), confidence=float(c))
            for a, e, c in zip(az, el, conf)]


def _speaker_position(track: TrackState, range_m: float) -> np.ndarray:
    if track.position is not None:
        return np.asarray(track.position, dtype=np.float64).reshape(3)
    return range_m * direction_vector(track.azimuth, track.elevation)


def _pointing_quaternion(direction: np.ndarray) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w) of Rz(yaw) Ry(pitch) whose x-axis is along ``direction``."""
    yaw, el = vector_to_azel(direction)
    pitch = -float(el)  # positive pitch about y tilts the x-axis down
    sy, cy = np.sin(0.5 * float(yaw)), np.cos(0.5 * float(yaw))
    sp, cp = np.sin(0.5 * pitch), np.cos(0.5 * pitch)
    return float(-sy * sp), float(cy * sp), float(sy * cp), float(cy * cp)


def _pose(position: np.ndarray, quat=(0.0, 0.0, 0.0, 1.0)) -> Any:
    T = TYPESTORE.types
    return T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=float(position[0]), y=float(position[1]),
                                              z=float(position[2])),
        orientation=T["geometry_msgs/msg/Quaternion"](x=quat[0], y=quat[1], z=quat[2],
                                                      w=quat[3]))


def speakers_pose_array(tracks: Sequence[TrackState], stamp_ns: int,
                        frame_id: str = ARRAY_FRAME, range_m: float = 1.5) -> Any:
    """PoseArray, one pose per track: at its position if known, else ``range_m`` along its
    direction; the pose x-axis points from the array at the speaker (an RViz arrow)."""
    poses = []
    for tr in tracks:
        pos = _speaker_position(tr, range_m)
        d = pos if np.linalg.norm(pos) > 1e-9 else tr.direction
        poses.append(_pose(pos, _pointing_quaternion(d)))
    return TYPESTORE.types[POSE_ARRAY](header=header(stamp_ns, frame_id), poses=poses)


def track_colour(track_id: int) -> tuple[float, float, float]:
    """A stable, well-separated RGB colour for a track id (golden-ratio hue steps)."""
    hue = (int(track_id) * 0.6180339887498949) % 1.0
    return colorsys.hsv_to_rgb(hue, 0.75, 0.95)


def speaker_markers(tracks: Sequence[TrackState], stamp_ns: int, frame_id: str = ARRAY_FRAME,
                    range_m: float = 1.5, lifetime_s: float = 0.5) -> Any:
    """MarkerArray: DELETEALL, then per track a SPHERE (ns 'speakers') and a
    TEXT_VIEW_FACING label 'speaker <id>' (ns 'speaker_labels'), both with id = track_id."""
    T = TYPESTORE.types
    rgba = T["std_msgs/msg/ColorRGBA"]
    vec = T["geometry_msgs/msg/Vector3"]
    hdr = header(stamp_ns, frame_id)
    markers = [new_msg(MARKER, header=hdr, action=3)]  # DELETEALL: drop stale ids
    for tr in tracks:
        pos = _speaker_position(tr, range_m)
        r, g, b = track_colour(tr.track_id)
        alpha = float(np.clip(0.4 + 0.6 * tr.confidence, 0.4, 1.0)) if tr.speaking else 0.4
        markers.append(new_msg(
            MARKER, header=hdr, ns="speakers", id=int(tr.track_id), type=2, action=0,
            pose=_pose(pos), scale=vec(x=0.25, y=0.25, z=0.25),
            color=rgba(r=r, g=g, b=b, a=alpha), lifetime=_duration(lifetime_s)))
        markers.append(new_msg(
            MARKER, header=hdr, ns="speaker_labels", id=int(tr.track_id), type=9, action=0,
            pose=_pose(pos + np.array([0.0, 0.0, 0.25])), scale=vec(x=0.0, y=0.0, z=0.12),
            color=rgba(r=r, g=g, b=b, a=1.0), lifetime=_duration(lifetime_s),
            text=f"speaker {int(tr.track_id)}"))
    return T[MARKER_ARRAY](markers=markers)


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------

def ground_truth_msg(sample: GroundTruthSample) -> Any:
    """std_msgs/String carrying one ground-truth sample as JSON (docs/ground_truth.md)."""
    return TYPESTORE.types[STRING](data=sample.to_json())


def ground_truth_from_msg(msg: Any) -> GroundTruthSample:
    """GroundTruthSample of a /ground_truth/speakers String (ValueError if malformed)."""
    try:
        return GroundTruthSample.from_json(msg.data)
    except (KeyError, TypeError, IndexError, AttributeError, OverflowError, ValueError) as exc:
        raise ValueError(f"malformed ground-truth message: {exc!r}") from exc
