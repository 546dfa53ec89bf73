"""The node logic on malformed messages: every one is dropped and counted, none raises (an
exception in a subscription callback would take the node down), and valid data that follows
is processed normally."""
import numpy as np
import pytest

from av_localization_ros.bag import messages as m
from av_localization_ros.core.camera import R_BODY_OPTICAL, CameraGeometry
from av_localization_ros.core.params import defaults
from av_localization_ros.nodes.localizer_logic import LocalizerLogic

T0 = 1_000_000_000
FS = 16000
CAMERA = CameraGeometry.from_fov(64, 48, 70.0)
TYPES = m.TYPESTORE.types


def logic():
    p = defaults()
    p["heatmap.enabled"] = False
    return LocalizerLogic(p)


def good_tf(lg):
    return m.tf_static_msg(lg.array_frame, lg.camera_frame, R_BODY_OPTICAL,
                           np.array([0.05, 0.0, 0.0]), T0)


def tone_chunks(seconds, start_ns, chunk=320):
    """4-channel 300 Hz tone with per-channel delays, as F32LE AudioDataStamped chunks."""
    n = int(seconds * FS)
    x = np.stack([np.sin(2 * np.pi * 300 * (np.arange(n) - c) / FS) for c in range(4)]) * 0.3
    return [m.audio_to_msg(x[:, s:s + chunk], start_ns + s * 1_000_000_000 // FS, "a", "F32LE")
            for s in range(0, n - chunk + 1, chunk)]


def run_valid(lg, seconds=1.5, start_ns=T0):
    """Valid AudioInfo, CameraInfo, /tf_static, then audio and 15 FPS images; the outputs."""
    lg.on_audio_info(m.audio_info_msg(4, FS, "F32LE"))
    lg.on_camera_info(m.camera_info_msg(CAMERA, start_ns))
    lg.on_tf_static(good_tf(lg))
    img = np.full((48, 64, 3), 90, np.uint8)
    out = []
    for k, chunk in enumerate(tone_chunks(seconds, start_ns)):
        out += lg.on_audio(chunk)
        if k % 3 == 0:  # 60 ms of audio per image
            out += lg.on_image(m.image_to_msg(img, m.stamp_to_ns(chunk.header.stamp), "c", "bgr8"))
    return out


@pytest.mark.parametrize("channels,rate", [(4, 0), (0, 16000)])
def test_unusable_audio_info_is_counted(channels, rate):
    lg = logic()
    info = m.new_msg("audio_common_msgs/msg/AudioInfo", channels=channels, sample_rate=rate,
                     sample_format="S16LE", bitrate=0, coding_format="wave")
    lg.on_audio_info(info)  # a sample rate of 0 used to raise ZeroDivisionError
    assert lg.diagnostics()["drop.bad_audio_info"] == 1
    assert lg.stream.audio_format is None
    names = {name for name, _ in run_valid(lg)}
    assert {"doa", "doa_map", "speakers", "speaker_markers", "heatmap", "overlay"} <= names


def test_unusable_tf_static_is_counted_and_a_good_one_still_works():
    lg = logic()
    lg.on_camera_info(m.camera_info_msg(CAMERA, T0))
    zero_q = good_tf(lg)
    rot = zero_q.transforms[0].transform.rotation
    rot.x = rot.y = rot.z = rot.w = 0.0
    lg.on_tf_static(zero_q)  # used to raise CalibrationError
    nan_t = good_tf(lg)
    nan_t.transforms[0].transform.translation.x = float("nan")
    lg.on_tf_static(nan_t)  # used to give the fusion a NaN lookup table
    d = lg.diagnostics()
    assert d["drop.bad_transform"] == 1 and d["drop.bad_calibration"] == 1
    assert lg.stream.camera is None
    lg.on_tf_static(good_tf(lg))
    assert lg.stream.camera is not None
    np.testing.assert_allclose(lg.stream.camera.t_array_optical, [0.05, 0.0, 0.0])


def garbage(rng, lg, t):
    """A malformed (or unusual) message of a random kind, with its input method."""
    kind = int(rng.integers(0, 5))
    hdr = TYPES["std_msgs/msg/Header"](stamp=m.ns_to_stamp(t), frame_id="x")
    if kind == 0:
        return lg.on_audio_info, m.new_msg(
            "audio_common_msgs/msg/AudioInfo", channels=int(rng.choice([0, 1, 4, 255])),
            sample_rate=int(rng.choice([0, 16000, 2**32 - 1])),
            sample_format=str(rng.choice(["S16LE", "F32LE", "U8", ""])), bitrate=0,
            coding_format="wave")
    if kind == 1:
        n = int(rng.choice([0, 1, 3, 641 * 8, 1280 * 4]))
        return lg.on_audio, m.new_msg(
            "audio_common_msgs/msg/AudioDataStamped", header=hdr,
            audio=TYPES["audio_common_msgs/msg/AudioData"](data=rng.integers(0, 256, n, np.uint8)))
    if kind == 2:
        w, h = int(rng.choice([0, 1, 64])), int(rng.choice([0, 1, 48]))
        enc = str(rng.choice(["bgr8", "rgb8", "mono8", "16UC1", "yuv422", "weird"]))
        step = w * 3 + int(rng.choice([0, 1, -1]))
        data = rng.integers(0, 256, max(step * h + int(rng.choice([0, -1, 5])), 0), np.uint8)
        return lg.on_image, m.new_msg("sensor_msgs/msg/Image", header=hdr, height=h, width=w,
                                      encoding=enc, is_bigendian=0, step=max(step, 0), data=data)
    if kind == 3:
        info = m.camera_info_msg(CAMERA, t)
        info.k = [np.zeros(9), np.full(9, np.nan), np.ones(5)][int(rng.integers(0, 3))]
        return lg.on_camera_info, info
    tf = good_tf(lg)  # valid half of the time, so that bad CameraInfo gets judged
    if rng.random() < 0.5:
        rot = tf.transforms[0].transform.rotation
        rot.x = rot.y = rot.z = rot.w = float(rng.choice([0.0, np.nan]))
    return lg.on_tf_static, tf


def test_random_malformed_messages_are_counted_and_valid_data_still_works():
    rng = np.random.default_rng(0)
    lg = logic()
    t = T0
    for _ in range(600):
        method, msg = garbage(rng, lg, t)
        method(msg)  # must not raise
        t += 20_000_000
    d = lg.diagnostics()
    for reason in ("bad_audio_info", "malformed_audio", "bad_image", "bad_calibration",
                   "bad_transform"):
        assert d.get(f"drop.{reason}", 0) > 0, reason
    names = [name for name, _ in run_valid(lg, start_ns=t + 10 * 1_000_000_000)]
    assert names.count("doa") >= 10 and "heatmap" in names and "overlay" in names


def test_images_without_usable_calibration_are_counted():
    """Missing extrinsics (no /tf_static) or an uncalibrated camera (K all zero, as many USB
    cameras publish): each image still runs, without fusion, and is counted."""
    lg = logic()
    lg.on_audio_info(m.audio_info_msg(4, FS, "F32LE"))
    lg.on_camera_info(m.camera_info_msg(CAMERA, T0))
    img = m.image_to_msg(np.full((48, 64, 3), 90, np.uint8), T0, "c", "bgr8")
    lg.on_image(img)
    assert lg.diagnostics()["drop.image_without_transform"] == 1
    uncalibrated = m.camera_info_msg(CAMERA, T0)
    uncalibrated.k = np.zeros(9)
    lg.on_camera_info(uncalibrated)
    lg.on_tf_static(good_tf(lg))
    lg.on_image(m.image_to_msg(np.full((48, 64, 3), 90, np.uint8), T0 + 66_666_667, "c", "bgr8"))
    d = lg.diagnostics()
    assert d["drop.bad_calibration"] == 1 and d["drop.image_with_unusable_calibration"] == 1
    assert lg.stream.camera is None


def test_compressed_audio_info_is_rejected_and_its_audio_dropped():
    """coding_format 'mp3': the payload is not PCM, so reading it as S16LE would be garbage."""
    lg = logic()
    info = m.new_msg("audio_common_msgs/msg/AudioInfo", channels=4, sample_rate=FS,
                     sample_format="S16LE", bitrate=0, coding_format="mp3")
    lg.on_audio_info(info)
    assert lg.stream.audio_format is None
    assert sum(len(lg.on_audio(c)) for c in tone_chunks(1.0, T0)) == 0
    d = lg.diagnostics()
    assert d["drop.bad_audio_info"] == 1 and d["drop.audio_after_unusable_info"] == 50


def test_messages_of_another_definition_are_counted_not_raised():
    """A bag recorded with another package's definition of the same type name (e.g. an
    AudioInfo with format/channels/rate/chunk, an Image without step): counted drops."""
    from types import SimpleNamespace

    lg = logic()
    lg.on_audio_info(SimpleNamespace(format=8, channels=4, rate=FS, chunk=512))
    assert lg.diagnostics()["drop.bad_audio_info"] == 1 and lg.stream.audio_format is None
    lg.on_audio_info(m.audio_info_msg(4, FS, "F32LE"))
    chunk = tone_chunks(0.02, T0)[0]
    assert lg.on_audio(SimpleNamespace(audio=chunk.audio)) == []  # no header
    lg.on_camera_info(SimpleNamespace(header=chunk.header, width=64, height=48))  # no k
    img = m.image_to_msg(np.full((48, 64, 3), 90, np.uint8), T0, "c", "bgr8")
    assert lg.on_image(SimpleNamespace(header=img.header, height=48, width=64,
                                       encoding="bgr8", data=img.data)) == []  # no step
    d = lg.diagnostics()
    assert d["drop.malformed_audio"] == 1 and d["drop.bad_calibration"] == 1
    assert d["drop.bad_image"] == 1
    names = {name for name, _ in run_valid(lg, start_ns=T0 + 10**9)}
    assert {"doa", "speakers", "heatmap"} <= names


@pytest.mark.parametrize("with_model,with_calibration", [(False, True), (True, False), (True, True)])
def test_published_heatmap_has_one_size_per_camera(with_model, with_calibration):
    """640 x 480 camera: the heatmap topic is 160 x 120 (the working resolution, the camera's
    field of view) whether it is the projected DoA alone, the model's heatmap alone (no
    calibration: it was published at 640 x 480) or both fused."""
    from av_localization_ros.av.runtime import HeatmapRunner

    p = defaults()
    runner = HeatmapRunner(backend="onnxruntime") if with_model else None
    lg = LocalizerLogic(p, heatmap_runner=runner)
    camera = CameraGeometry.from_fov(640, 480, 70.0)
    lg.on_audio_info(m.audio_info_msg(4, FS, "F32LE"))
    lg.on_camera_info(m.camera_info_msg(camera, T0))
    if with_calibration:
        lg.on_tf_static(good_tf(lg))
    img = np.full((480, 640, 3), 90, np.uint8)
    out = []
    for k, chunk in enumerate(tone_chunks(1.0, T0)):
        out += lg.on_audio(chunk)
        if k % 3 == 0:
            out += lg.on_image(m.image_to_msg(img, m.stamp_to_ns(chunk.header.stamp), "c", "bgr8"))
    heatmaps = [msg for name, msg in out if name == "heatmap"]
    assert len(heatmaps) >= 5
    assert {(h.width, h.height, h.step) for h in heatmaps} == {(160, 120, 640)}
