"""The rclpy shells, the launch file, the RViz config and the node configs.

Tests that need ROS 2 (rclpy, message_filters, tf2_ros, launch) skip with the reason when they are
not importable; the checks of the files themselves run everywhere.
"""
from __future__ import annotations

import ast
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from av_localization_ros.core.params import PARAMETERS
from av_localization_ros.nodes.capture import CAPTURE_PARAMETERS, config_from_params
from av_localization_ros.nodes.localizer_logic import OUTPUT_TOPICS

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "localize.launch.py"
RVIZ = ROOT / "rviz" / "av_localization.rviz"


def _missing(*modules: str) -> str | None:
    for name in modules:
        try:
            if importlib.util.find_spec(name) is None:
                return name
        except (ImportError, ValueError):
            return name
    return None


_ROS = _missing("rclpy", "message_filters", "tf2_ros", "rosidl_runtime_py", "audio_common_msgs")
needs_rclpy = pytest.mark.skipif(
    _ROS is not None, reason=f"ROS 2 Python module {_ROS!r} is not importable (source a ROS 2 "
                             "Humble/Jazzy setup.bash with audio_common_msgs installed)")


# --------------------------------------------------------------------------------------------
# Files (run everywhere)
# --------------------------------------------------------------------------------------------
def test_launch_file_imports_only_launch_and_declares_arguments():
    tree = ast.parse(LAUNCH.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"launch", "launch_ros"}, imported
    declared = {n.args[0].value for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"}
    assert {"params_file", "namespace", "use_sim_time", "rviz", "capture"} <= declared


@pytest.mark.skipif(_missing("launch", "launch_ros") is not None, reason="launch / launch_ros not importable")
def test_launch_description_builds():
    spec = importlib.util.spec_from_file_location("localize_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    names = {a.name for a in ld.get_launch_arguments()}
    assert {"params_file", "namespace", "use_sim_time", "rviz", "capture"} <= names


def test_rviz_config_shows_the_outputs():
    cfg = yaml.safe_load(RVIZ.read_text())
    vm = cfg["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "mic_array"
    # relative names: rviz2 runs in the launch file's namespace, as the localizer does
    topics = {d["Class"]: d.get("Topic", {}).get("Value") for d in vm["Displays"]}
    assert topics["rviz_default_plugins/PoseArray"] == "av_localization/speakers"
    assert topics["rviz_default_plugins/PointCloud2"] == "av_localization/doa"
    assert topics["rviz_default_plugins/MarkerArray"] == "av_localization/speaker_markers"
    images = [d["Topic"]["Value"] for d in vm["Displays"] if d["Class"] == "rviz_default_plugins/Image"]
    assert "av_localization/overlay" in images
    for t in topics.values():
        if t and "av_localization/" in t:
            assert not t.startswith("/") and t.rsplit("/", 1)[1] in OUTPUT_TOPICS


def test_capture_yaml_matches_the_capture_parameters():
    doc = yaml.safe_load((ROOT / "config" / "capture.yaml").read_text())
    values = doc["/**"]["ros__parameters"]
    assert set(values) == set(CAPTURE_PARAMETERS)
    cfg = config_from_params(values)
    assert (cfg.channels, cfg.sample_rate, cfg.sample_format) == (4, 16000, "S16LE")
    for name, (_, description) in CAPTURE_PARAMETERS.items():
        assert description.strip(), name
    for bad in ({"sample_format": "MP3"}, {"channels": None}, {"sample_rate": [16000]},
                {"chunk_frames": float("inf")}, {"channels": 0}):
        with pytest.raises(ValueError):
            config_from_params(dict(values, **bad))


def test_node_modules_import_without_ros():
    import av_localization_ros.nodes.capture_node as cn
    import av_localization_ros.nodes.hri as hri
    import av_localization_ros.nodes.localizer_node as ln

    assert callable(ln.main) and callable(cn.main) and callable(hri.voice_messages)


# --------------------------------------------------------------------------------------------
# rclpy (skipped where ROS 2 is not installed)
# --------------------------------------------------------------------------------------------
@pytest.fixture()
def rclpy_context():
    import rclpy

    rclpy.init()
    try:
        yield rclpy
    finally:
        rclpy.try_shutdown()


@needs_rclpy
def test_localizer_node_declares_parameters_with_descriptions(rclpy_context):
    from av_localization_ros.nodes.localizer_node import make_node_class

    node = make_node_class()()
    try:
        for name, spec in PARAMETERS.items():
            assert node.has_parameter(name), name
            desc = node.describe_parameter(name)
            assert desc.description == spec.description
            assert desc.read_only
    finally:
        node.destroy_node()


@needs_rclpy
def test_localizer_node_end_to_end_stamps(rclpy_context):
    """Audio + image + camera_info through real rclpy pub/sub; outputs carry the image stamp."""
    rclpy = rclpy_context
    from audio_common_msgs.msg import AudioDataStamped, AudioInfo
    from geometry_msgs.msg import PoseArray
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    from av_localization_ros.bag import messages as m
    from av_localization_ros.nodes.cdr import encode
    from av_localization_ros.nodes.localizer_node import make_node_class

    def to_rclpy(msg, msgtype, cls):
        return deserialize_message(encode(msg, msgtype), cls)

    loc = make_node_class()()
    helper = rclpy.create_node("av_test_helper")
    latched = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.RELIABLE,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    got = []
    try:
        p_info = helper.create_publisher(AudioInfo, "audio/audio_info", latched)
        p_tf = helper.create_publisher(TFMessage, "/tf_static", latched)
        p_audio = helper.create_publisher(AudioDataStamped, "audio/audio", 100)
        p_img = helper.create_publisher(Image, "camera/image_raw", 10)
        p_cam = helper.create_publisher(CameraInfo, "camera/camera_info", 10)
        helper.create_subscription(PoseArray, "av_localization/speakers", got.append, 10)
        from rclpy.executors import SingleThreadedExecutor

        ex = SingleThreadedExecutor()
        ex.add_node(loc)
        ex.add_node(helper)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (p_audio.get_subscription_count() == 0
                                               or p_img.get_subscription_count() == 0):
            ex.spin_once(timeout_sec=0.05)
        t0, fs, chunk = 1_700_000_000_000_000_000, 16000, 320
        p_info.publish(to_rclpy(m.audio_info_msg(4, fs, "S16LE"), m.AUDIO_INFO, AudioInfo))
        p_tf.publish(to_rclpy(m.tf_static_msg(m.ARRAY_FRAME, m.CAMERA_FRAME,
                                              np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]]).T,
                                              np.zeros(3), t0), m.TF_MESSAGE, TFMessage))
        rng = np.random.default_rng(0)
        for i in range(70):  # 1.4 s: the image at 0.9 s needs audio up to 0.9 s + lookahead
            x = (0.1 * rng.standard_normal((4, chunk))).astype(np.float32)
            p_audio.publish(to_rclpy(m.audio_to_msg(x, t0 + i * chunk * 1_000_000_000 // fs),
                                     m.AUDIO_STAMPED, AudioDataStamped))
            ex.spin_once(timeout_sec=0.0)
        stamp = t0 + 900_000_000
        w, h = 64, 48
        cam = m.new_msg(m.CAMERA_INFO, header=m.header(stamp, m.CAMERA_FRAME), width=w, height=h,
                        distortion_model="plumb_bob", d=np.zeros(5),
                        k=np.array([60.0, 0, 32, 0, 60.0, 24, 0, 0, 1]), r=np.eye(3).ravel(),
                        p=np.array([60.0, 0, 32, 0, 0, 60.0, 24, 0, 0, 0, 1, 0]))
        p_cam.publish(to_rclpy(cam, m.CAMERA_INFO, CameraInfo))
        p_img.publish(to_rclpy(m.image_to_msg(np.zeros((h, w, 3), np.uint8), stamp), m.IMAGE, Image))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                m.stamp_to_ns(g.header.stamp) == stamp for g in got):
            ex.spin_once(timeout_sec=0.05)
        stamps = {g.header.stamp.sec * 1_000_000_000 + g.header.stamp.nanosec for g in got}
        assert stamp in stamps
    finally:
        helper.destroy_node()
        loc.destroy_node()


# --------------------------------------------------------------------------------------------
# The rclpy shell's own code, run everywhere against a minimal stand-in of the rclpy API
# (signatures as in Humble/Jazzy). It catches errors in the shell, not API drift: the tests
# above run the real thing where ROS 2 is installed.
# --------------------------------------------------------------------------------------------
class _FakeRos:
    def __init__(self):
        import types

        self.published: list[tuple[str, bytes]] = []
        self.subs: dict[str, object] = {}
        self.timers = []
        self.mf_subs: dict[str, object] = {}
        fake = self

        class Param:
            def __init__(self, value):
                self.value = value

        class Logger:
            def info(self, msg, **kw):
                pass

            def warning(self, msg, **kw):
                assert set(kw) <= {"throttle_duration_sec", "once", "skip_first"}

            error = warning

        class Clock:
            def now(self):
                return types.SimpleNamespace(nanoseconds=123)

        class Publisher:
            def __init__(self, topic):
                self.topic = topic

            def publish(self, msg):
                assert isinstance(msg, bytes), "the shells publish serialized CDR"
                fake.published.append((self.topic, msg))

        class Context:  # rclpy.context.Context: on_shutdown(callback), ok()
            def __init__(self):
                self.callbacks, self.is_ok = [], True

            def on_shutdown(self, callback):
                self.callbacks.append(callback)

            def ok(self):
                return self.is_ok

            def shutdown(self):
                self.is_ok = False
                for cb in self.callbacks:
                    cb()

        class Node:
            def __init__(self, node_name, **kwargs):
                self._name = node_name
                self._params = {}
                self.overrides = {}
                self.context = Context()

            def declare_parameter(self, name, value=None, descriptor=None, ignore_override=False):
                assert descriptor is not None and descriptor.description
                self._params[name] = Param(value)
                return self._params[name]

            def get_parameter(self, name):
                return self._params[name]

            def get_name(self):
                return self._name

            def get_logger(self):
                return Logger()

            def get_clock(self):
                return Clock()

            def create_publisher(self, msg_type, topic, qos_profile, **kw):
                return Publisher(topic)

            def create_subscription(self, msg_type, topic, callback, qos_profile, *, raw=False, **kw):
                fake.subs[topic] = (callback, raw, qos_profile)
                return object()

            def create_timer(self, period, callback, **kw):
                fake.timers.append(callback)

            def destroy_node(self):
                pass

        class ParameterDescriptor:
            def __init__(self, description="", read_only=False, dynamic_typing=False, **kw):
                self.description, self.read_only, self.dynamic_typing = description, read_only, dynamic_typing

        class QoSProfile:
            def __init__(self, *, depth=None, history=None, reliability=None, durability=None, **kw):
                assert depth is not None
                self.depth, self.durability = depth, durability

        class Enum:
            KEEP_LAST = "keep_last"
            RELIABLE = "reliable"
            TRANSIENT_LOCAL = "transient_local"
            VOLATILE = "volatile"

        class Subscriber:
            def __init__(self, node, msg_type, topic, qos_profile=None, **kw):
                self.callbacks = []
                fake.mf_subs[topic] = self

            def registerCallback(self, cb, *args):
                self.callbacks.append(cb)

        class ApproximateTimeSynchronizer:
            def __init__(self, fs, queue_size, slop, allow_headerless=False):
                self.cb = None
                fake.sync = self

            def registerCallback(self, cb, *args):
                self.cb = cb

        class Buffer:
            def lookup_transform(self, target, source, time, timeout=None):
                raise LookupError("no tf in the fake")

        mods = {
            "rclpy": types.ModuleType("rclpy"),
            "rclpy.node": types.SimpleNamespace(Node=Node),
            "rclpy.qos": types.SimpleNamespace(
                QoSProfile=QoSProfile, QoSDurabilityPolicy=Enum, QoSHistoryPolicy=Enum,
                QoSReliabilityPolicy=Enum, qos_profile_sensor_data=QoSProfile(depth=5)),
            "rclpy.serialization": types.SimpleNamespace(serialize_message=lambda msg: msg.cdr),
            "rclpy.time": types.SimpleNamespace(Time=lambda **kw: 0),
            "rcl_interfaces": types.ModuleType("rcl_interfaces"),
            "rcl_interfaces.msg": types.SimpleNamespace(ParameterDescriptor=ParameterDescriptor),
            "message_filters": types.SimpleNamespace(
                Subscriber=Subscriber, ApproximateTimeSynchronizer=ApproximateTimeSynchronizer),
            "tf2_ros": types.SimpleNamespace(Buffer=Buffer, TransformListener=lambda buf, node: None),
            "rosidl_runtime_py": types.ModuleType("rosidl_runtime_py"),
            "rosidl_runtime_py.utilities": types.SimpleNamespace(get_message=lambda name: name),
        }
        self.modules = mods


@pytest.fixture()
def fake_ros(monkeypatch):
    import sys

    if _ROS is None:
        pytest.skip("real ROS 2 is installed: the real-rclpy tests cover the shell")
    fake = _FakeRos()
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.delitem(sys.modules, "hri_msgs", raising=False)
    return fake


def test_localizer_shell_against_api_stand_in(fake_ros):
    import types

    from av_localization_ros.bag import messages as m
    from av_localization_ros.nodes.cdr import decode, encode
    from av_localization_ros.nodes.localizer_node import make_node_class

    node = make_node_class()(enable_rosout=False)
    subs = fake_ros.subs
    assert subs["audio/audio_info"][1] and subs["audio/audio_info"][2].durability == "transient_local"
    assert subs["audio/audio"][1]  # raw bytes
    assert set(fake_ros.mf_subs) == {"camera/image_raw", "camera/camera_info"}
    t0, fs, chunk = 1_700_000_000_000_000_000, 16000, 320
    subs["audio/audio"][0](encode(m.audio_to_msg(np.zeros((4, chunk), np.float32), t0), m.AUDIO_STAMPED))
    subs["audio/audio_info"][0](encode(m.audio_info_msg(4, fs, "S16LE"), m.AUDIO_INFO))
    subs["audio/audio_info"][0](b"\x00\x01\x00\x00garbage")
    rng = np.random.default_rng(1)

    def audio(chunks):
        for i in chunks:
            x = (0.1 * rng.standard_normal((4, chunk))).astype(np.float32)
            subs["audio/audio"][0](encode(m.audio_to_msg(x, t0 + i * chunk * 1_000_000_000 // fs),
                                          m.AUDIO_STAMPED))

    audio(range(40))  # 0.8 s; the image below (0.9 s) arrives before the audio that covers it
    stamp = t0 + 900_000_000
    w, h = 64, 48
    cam = m.new_msg(m.CAMERA_INFO, header=m.header(stamp, m.CAMERA_FRAME), width=w, height=h,
                    distortion_model="plumb_bob", d=np.zeros(5),
                    k=np.array([60.0, 0, 32, 0, 60.0, 24, 0, 0, 1]), r=np.eye(3).ravel(),
                    p=np.array([60.0, 0, 32, 0, 0, 60.0, 24, 0, 0, 0, 1, 0]))
    img = types.SimpleNamespace(cdr=encode(m.image_to_msg(np.zeros((h, w, 3), np.uint8), stamp), m.IMAGE))
    info = types.SimpleNamespace(cdr=encode(cam, m.CAMERA_INFO))
    for cb in fake_ros.mf_subs["camera/image_raw"].callbacks:
        cb(img)
    fake_ros.sync.cb(img, info)
    bad = types.SimpleNamespace(cdr=encode(m.image_to_msg(np.zeros((h, w, 3), np.uint8), stamp + 1), m.IMAGE)[:50])
    fake_ros.sync.cb(bad, info)  # malformed: counted, not raised
    audio(range(40, 70))
    for t in fake_ros.timers:
        t()
    topics = {}
    for topic, data in fake_ros.published:
        topics.setdefault(topic, []).append(data)
    speakers = [decode(d, "geometry_msgs/msg/PoseArray") for d in topics["av_localization/speakers"]]
    assert stamp in {m.stamp_to_ns(s.header.stamp) for s in speakers}
    from av_localization_ros.nodes.diagnostics import diagnostics_to_dict

    diag = next(iter(diagnostics_to_dict(decode(topics["/diagnostics"][-1], "diagnostic_msgs/msg/DiagnosticArray")).values()))
    assert int(diag["drop.malformed_message.audio_info"]) == 1
    assert int(diag["drop.callback_error.image"]) == 1
    assert int(diag["drop.audio_before_info"]) == 1


def test_capture_shell_against_api_stand_in(fake_ros, monkeypatch):
    from av_localization_ros.bag import messages as m
    from av_localization_ros.nodes import capture_node
    from av_localization_ros.nodes.capture import Chunk
    from av_localization_ros.nodes.cdr import decode

    class FakeCapture:
        def __init__(self, config, clock_ns=None, pa=None):
            self.config, self.device_index, self.device_name = config, 0, "fake"
            n = config.chunk_frames
            self.chunks = [Chunk(bytes([i]) * (n * config.bytes_per_frame), 1000 + i * n * 62500, i * n, n, 0)
                           for i in range(3)]

        active = True

        def start(self):
            pass

        def stop(self):
            pass

        def read(self, timeout_s=1.0):
            if self.chunks:
                return self.chunks.pop(0)
            time.sleep(0.01)
            return None

        def stats(self):
            return {"chunks": 3, "overruns": 0}

    monkeypatch.setattr(capture_node, "AudioCapture", FakeCapture)
    node = capture_node.make_node_class()()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(t == "audio/audio" for t, _ in fake_ros.published) < 3:
        time.sleep(0.01)
    for t in fake_ros.timers:
        t()
    node.destroy_node()
    by_topic = {}
    for topic, data in fake_ros.published:
        by_topic.setdefault(topic, []).append(data)
    info = decode(by_topic["audio/audio_info"][0], m.AUDIO_INFO)
    assert (info.channels, info.sample_rate, info.sample_format) == (4, 16000, "S16LE")
    audio = [decode(d, m.AUDIO_STAMPED) for d in by_topic["audio/audio"]]
    assert [m.stamp_to_ns(a.header.stamp) for a in audio] == [1000 + i * 512 * 62500 for i in range(3)]
    assert bytes(audio[1].audio.data[:3]) == b"\x01\x01\x01"
    assert "/diagnostics" in by_topic

    # the device disappears: the pump ends and the diagnostics say ERROR, not "ok"
    from av_localization_ros.nodes.diagnostics import ERROR
    fake_ros.published.clear()
    node = capture_node.make_node_class()()
    node.capture.active = False
    node._thread.join(timeout=5.0)
    assert not node._thread.is_alive()
    for t in fake_ros.timers:
        t()
    diag = decode([d for t, d in fake_ros.published if t == "/diagnostics"][-1],
                  "diagnostic_msgs/msg/DiagnosticArray")
    assert diag.status[0].level == ERROR and "stopped" in diag.status[0].message
    # Ctrl-C: rclpy shuts the context down before destroy_node; the pump stops publishing
    node = capture_node.make_node_class()()
    node.context.shutdown()
    node._thread.join(timeout=5.0)
    assert not node._thread.is_alive()
    node.destroy_node()


def test_node_only_parameters_take_integers_and_refuse_nonsense():
    """Declared with dynamic typing (rclpy fixes a parameter's type from its default otherwise,
    and 'diagnostics_period_s: 1' in a params file raised InvalidParameterTypeException)."""
    from av_localization_ros.core.params import NODE_PARAMETERS, coerce_params

    def node_options(values):
        return coerce_params(values, NODE_PARAMETERS)

    defaults = {name: spec.default for name, spec in NODE_PARAMETERS.items()}
    assert node_options(defaults) == defaults
    opt = node_options(dict(defaults, diagnostics_period_s=2))
    assert opt["diagnostics_period_s"] == 2.0 and isinstance(opt["diagnostics_period_s"], float)
    for bad in ({"publish_overlay": "yes"}, {"diagnostics_period_s": "fast"},
                {"diagnostics_period_s": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            node_options(dict(defaults, **bad))
