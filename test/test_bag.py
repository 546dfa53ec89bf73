"""rosbag2 I/O: message conversions and round trips through real mcap / sqlite3 bags."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from av_localization_ros.bag import messages as M
from av_localization_ros.bag.reader import _McapScan, _Errors, BagReadReport, bag_summary, read_bag
from av_localization_ros.bag.writer import (
    CUSTOM_MIC_ARRAY,
    CUSTOM_SCENE_CONFIG,
    BagWriter,
    sample_stamps_ns,
    write_scene_bag,
)
from av_localization_ros.core.camera import CalibrationError, CameraGeometry, quaternion_to_matrix
from av_localization_ros.core.geometry import MicArray
from av_localization_ros.core.types import DoaPeak, ImageFrame, TrackState, direction_vector
from av_localization_ros.evaluation.ground_truth import GroundTruthSample, SpeakerTruth

STORAGES = ["mcap", "sqlite3"]
T0 = 1_700_000_000_000_000_000


def _read_all(path, **kw):
    reader = read_bag(path, **kw)
    msgs = list(reader)
    return msgs, reader.report


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _track(tid, az, el, position=None, speaking=True):
    return TrackState(track_id=tid, azimuth=az, elevation=el, azimuth_rate=0.0,
                      elevation_rate=0.0, covariance=np.eye(4), confidence=0.8,
                      speaking=speaking, age_s=1.0, position=position)


# ------------------------------------------------------------------------------- typestore

def test_typestore_has_audio_common_with_definitions_and_hashes():
    for name in (M.AUDIO_DATA, M.AUDIO_STAMPED, M.AUDIO_INFO):
        assert name in M.TYPESTORE.fielddefs
        assert M.TYPESTORE.hash_rihs01(name).startswith("RIHS01_")
    msgdef, _ = M.TYPESTORE.generate_msgdef(M.AUDIO_STAMPED, ros_version=2)
    assert msgdef.startswith("std_msgs/Header header\naudio_common_msgs/AudioData audio")
    assert "MSG: audio_common_msgs/AudioData\nuint8[] data" in msgdef
    info = [n for n, _ in M.TYPESTORE.fielddefs[M.AUDIO_INFO][1]]
    assert info == ["channels", "sample_rate", "sample_format", "bitrate", "coding_format"]


def test_stamps():
    for ns in (0, 1, T0 + 999_999_999, -1):
        st = M.ns_to_stamp(ns)
        assert 0 <= st.nanosec < 1_000_000_000
        assert M.stamp_to_ns(st) == ns


# ----------------------------------------------------------------------------------- audio

@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("fmt", ["S16LE", "F32LE"])
def test_audio_round_trip_through_bag(tmp_path, storage, fmt):
    rng = np.random.default_rng(1)
    fs, n_ch, chunk = 16000, 4, 320
    blocks = [rng.uniform(-1.2, 1.2, (n_ch, chunk)).astype(np.float32) for _ in range(5)]
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/audio/audio_info", M.audio_info_msg(n_ch, fs, fmt), T0)
        for i, b in enumerate(blocks):
            stamp = T0 + i * 20_000_000
            bag.write("/audio/audio", M.audio_to_msg(b, stamp, "mic_array", fmt), stamp)
    msgs, report = _read_all(tmp_path / "b")
    assert report.ok and report.messages_read == 6
    info = msgs[0].msg
    assert M.audio_info_fields(info) == (n_ch, fs, fmt)
    assert info.coding_format == "wave" and info.bitrate == n_ch * fs * (16 if fmt == "S16LE"
                                                                          else 32)
    for i, (bm, b) in enumerate(zip(msgs[1:], blocks)):
        assert bm.msgtype == M.AUDIO_STAMPED and bm.msg.header.frame_id == "mic_array"
        assert M.stamp_to_ns(bm.msg.header.stamp) == bm.stamp_ns == T0 + i * 20_000_000
        out = M.msg_to_audio(bm.msg, n_ch, fmt)
        assert out.dtype == np.float32 and out.shape == b.shape
        raw = bytes(bm.msg.audio.data)
        if fmt == "F32LE":
            assert np.array_equal(out.view(np.uint32), b.view(np.uint32))  # bit-exact
            interleaved = np.frombuffer(raw, "<f4").reshape(-1, n_ch).T
            assert np.array_equal(interleaved, b)
        else:
            q = np.rint(np.clip(b.astype(np.float64), -1, 1) * 32767).astype(np.int16)
            interleaved = np.frombuffer(raw, "<i2").reshape(-1, n_ch).T  # independent decode
            assert np.array_equal(interleaved, q)
            assert np.array_equal(np.rint(out.astype(np.float64) * 32767).astype(np.int16), q)
            assert np.abs(out - np.clip(b, -1, 1)).max() <= 0.5 / 32767 + 1e-7
            # re-encoding the decoded audio reproduces the payload exactly
            again = M.audio_to_msg(out, 0, "mic_array", fmt)
            assert bytes(again.audio.data) == raw


def test_malformed_audio_raises_audio_format_error():
    msg = M.audio_to_msg(np.zeros((2, 10), np.float32), 0)
    with pytest.raises(M.AudioFormatError, match="not a multiple"):
        M.msg_to_audio(msg, channels=3, sample_format="S16LE")  # 40 bytes, 6-byte frames
    msg.audio.data = np.zeros(7, np.uint8)
    with pytest.raises(M.AudioFormatError):
        M.msg_to_audio(msg, channels=2)
    with pytest.raises(M.AudioFormatError, match="unsupported"):
        M.msg_to_audio(msg, channels=1, sample_format="MP3")
    with pytest.raises(ValueError):  # AudioFormatError is a ValueError
        M.audio_info_msg(2, 16000, "S24BE")
    with pytest.raises(M.AudioFormatError):
        M.audio_to_msg(np.full((1, 4), np.nan, np.float32), 0)


# ---------------------------------------------------------------------------------- images

@pytest.mark.parametrize("storage", STORAGES)
def test_images_round_trip_through_bag(tmp_path, storage):
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 8), dtype=np.uint8)
    heat = rng.random((6, 8)).astype(np.float32)
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/bgr", M.image_to_msg(bgr, T0, encoding="bgr8"), T0)
        bag.write("/rgb", M.image_to_msg(bgr, T0 + 1, encoding="rgb8"), T0 + 1)
        bag.write("/mono", M.image_to_msg(grey, T0 + 2, encoding="mono8"), T0 + 2)
        bag.write("/heat", M.float_image_msg(heat, T0 + 3, "camera_optical_frame"), T0 + 3)
    msgs = {m.topic: m.msg for m in read_bag(tmp_path / "b")}
    assert np.array_equal(M.msg_to_bgr(msgs["/bgr"]), bgr)
    rgb = msgs["/rgb"]
    assert rgb.encoding == "rgb8" and rgb.step == 24
    assert np.array_equal(np.asarray(rgb.data).reshape(6, 8, 3), bgr[..., ::-1])
    assert np.array_equal(M.msg_to_bgr(rgb), bgr)
    out = M.msg_to_bgr(msgs["/mono"])
    assert out.shape == (6, 8, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))
    h = msgs["/heat"]
    assert (h.encoding, h.is_bigendian, h.step, h.height, h.width) == ("32FC1", 0, 32, 6, 8)
    assert np.array_equal(np.frombuffer(bytes(h.data), "<f4").reshape(6, 8), heat)
    assert np.array_equal(M.msg_to_float_image(h), heat)
    assert M.msg_to_bgr(msgs["/bgr"]).flags.writeable


def test_image_errors_and_padded_step():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = M.image_to_msg(img, 0)
    padded = np.zeros((2, 12), np.uint8)
    padded[:, :9] = img.reshape(2, 9)
    msg.step, msg.data = 12, padded.reshape(-1)
    assert np.array_equal(M.msg_to_bgr(msg), img)
    msg.data = padded.reshape(-1)[:-1]
    with pytest.raises(M.ImageFormatError, match="step"):
        M.msg_to_bgr(msg)
    msg.step = 5  # < width * 3
    with pytest.raises(M.ImageFormatError):
        M.msg_to_bgr(msg)
    bad = M.image_to_msg(img, 0)
    bad.encoding = "yuv422"
    with pytest.raises(M.ImageFormatError, match="unsupported"):
        M.msg_to_bgr(bad)
    empty = M.image_to_msg(img, 0)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, np.zeros(0, np.uint8)
    with pytest.raises(M.ImageFormatError, match="empty"):
        M.msg_to_bgr(empty)
    with pytest.raises(M.ImageFormatError):
        M.image_to_msg(img, 0, encoding="bayer_rggb8")
    assert issubclass(M.ImageFormatError, ValueError)


@pytest.mark.parametrize("encoding,channels", [("bgr8", 3), ("mono8", 1)])
def test_image_step_is_the_row_length_of_a_one_row_crop(encoding, channels):
    """A one-row column crop of a wider array is contiguous to numpy without a copy, so its
    row stride is the parent's: step must still be width x bytes per pixel."""
    wide = np.arange(2 * 8 * channels, dtype=np.uint8).reshape((2, 8, channels)[:2 + (channels > 1)])
    crop = wide[:1, 2:7]
    msg = M.image_to_msg(crop, 0, encoding=encoding)
    assert msg.step == 5 * channels and len(msg.data) == 5 * channels
    if channels == 3:
        assert np.array_equal(M.msg_to_bgr(msg), crop)


# ------------------------------------------------------------------------ camera info and tf

@pytest.mark.parametrize("storage", STORAGES)
def test_camera_info_and_tf_static_round_trip(tmp_path, storage):
    r = _rot([0.3, -0.2, 1.0], 0.4) @ np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
    t = np.array([0.05, -0.01, 0.03])
    cam = CameraGeometry.from_fov(160, 120, 70.0, r_array_optical=r, t_array_optical=t)
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/tf_static", M.tf_static_msg("mic_array", "camera_optical_frame", r, t, T0),
                  T0)
        bag.write("/camera/camera_info", M.camera_info_msg(cam, T0, "camera_optical_frame"), T0)
    msgs = {m.topic: m.msg for m in read_bag(tmp_path / "b")}
    info, tf = msgs["/camera/camera_info"], msgs["/tf_static"]
    assert info.distortion_model == "plumb_bob" and np.all(np.asarray(info.d) == 0)
    assert np.allclose(np.asarray(info.r).reshape(3, 3), np.eye(3))
    p = np.asarray(info.p).reshape(3, 4)
    assert np.allclose(p[:, :3], cam.k) and np.all(p[:, 3] == 0)
    found = M.find_transform([tf], "mic_array", "camera_optical_frame")
    cam2 = M.camera_from_msgs(info, found)
    assert np.allclose(cam2.k, cam.k) and (cam2.width, cam2.height) == (160, 120)
    assert np.allclose(cam2.r_array_optical, r, atol=1e-12)
    assert np.allclose(cam2.t_array_optical, t)
    assert np.allclose(M.camera_from_msgs(info, tf.transforms[0]).r_array_optical, r)
    # inverse direction
    ri, ti = M.find_transform([tf], "/camera_optical_frame", "mic_array")
    assert np.allclose(ri, r.T, atol=1e-12) and np.allclose(ti, -r.T @ t)
    # chains through an intermediate frame, and unknown frames
    r2, t2 = _rot([1, 0, 0], 0.3), np.array([0.0, 0.1, 0.0])
    extra = M.tf_static_msg("camera_optical_frame", "lens", r2, t2, T0)
    rc, tc = M.find_transform([tf, extra], "mic_array", "lens")
    assert np.allclose(rc, r @ r2) and np.allclose(tc, r @ t2 + t)
    assert M.find_transform([tf], "mic_array", "base_link") is None


def test_camera_from_msgs_rejects_uncalibrated():
    cam = CameraGeometry.from_fov(64, 48, 60.0)
    info = M.camera_info_msg(cam, 0)
    tf = M.tf_static_msg("mic_array", "camera_optical_frame", np.eye(3), np.zeros(3), 0)
    info.k = np.zeros(9)
    with pytest.raises(CalibrationError):
        M.camera_from_msgs(info, tf.transforms[0])
    with pytest.raises(CalibrationError):
        M.camera_from_msgs(M.camera_info_msg(cam, 0), None)


# ------------------------------------------------------------------------------------ outputs

@pytest.mark.parametrize("storage", STORAGES)
def test_doa_cloud_layout_and_round_trip(tmp_path, storage):
    peaks = [DoaPeak(0.3, 0.1, 0.9), DoaPeak(-2.0, -0.4, 0.25), DoaPeak(3.0, 0.7, 1.0)]
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/av_localization/doa", M.doa_cloud_msg(peaks, T0, "mic_array"), T0)
        bag.write("/av_localization/doa", M.doa_cloud_msg([], T0 + 1, "mic_array"), T0 + 1)
    (bm, empty), report = _read_all(tmp_path / "b")
    msg = bm.msg
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("confidence", 12, 7, 1)]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 3, 16, 48)
    assert msg.is_dense and not msg.is_bigendian and len(msg.data) == 48
    rec = np.frombuffer(bytes(msg.data), dtype=np.dtype(
        {"names": ["x", "y", "z", "c"], "formats": ["<f4"] * 4, "offsets": [0, 4, 8, 12],
         "itemsize": 16}))
    dirs = direction_vector([p.azimuth for p in peaks], [p.elevation for p in peaks])
    assert np.allclose(np.stack([rec["x"], rec["y"], rec["z"]], -1), dirs, atol=1e-6)
    assert np.allclose(rec["c"], [0.9, 0.25, 1.0])
    back = M.cloud_to_peaks(msg)
    for a, b in zip(back, peaks):
        assert abs(a.azimuth - b.azimuth) < 1e-5 and abs(a.elevation - b.elevation) < 1e-5
        assert abs(a.confidence - b.confidence) < 1e-6
    assert M.cloud_to_peaks(empty.msg) == [] and empty.msg.width == 0


@pytest.mark.parametrize("storage", STORAGES)
def test_speaker_poses_and_markers(tmp_path, storage):
    tracks = [_track(3, 0.5, 0.2), _track(7, -1.0, -0.1, position=np.array([1.0, 2.0, 0.5])),
              _track(12, 2.5, 0.0, speaking=False)]
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/av_localization/speakers", M.speakers_pose_array(tracks, T0), T0)
        bag.write("/av_localization/speaker_markers", M.speaker_markers(tracks, T0), T0)
    msgs = {m.topic: m.msg for m in read_bag(tmp_path / "b")}
    poses = msgs["/av_localization/speakers"].poses
    for pose, tr in zip(poses, tracks):
        pos = np.array([pose.position.x, pose.position.y, pose.position.z])
        expect = tr.position if tr.position is not None else 1.5 * tr.direction
        assert np.allclose(pos, expect)
        q = pose.orientation
        rot = quaternion_to_matrix(q.x, q.y, q.z, q.w)
        assert np.allclose(rot[:, 0], expect / np.linalg.norm(expect), atol=1e-9)  # x -> speaker
        assert abs(rot[2, 1]) < 1e-9  # no roll: the pose y-axis stays horizontal
    markers = msgs["/av_localization/speaker_markers"].markers
    assert markers[0].action == 3  # DELETEALL first
    spheres = [m for m in markers if m.ns == "speakers"]
    labels = [m for m in markers if m.ns == "speaker_labels"]
    assert [m.id for m in spheres] == [3, 7, 12] and all(m.type == 2 for m in spheres)
    assert [m.id for m in labels] == [3, 7, 12] and all(m.type == 9 for m in labels)
    assert [m.text for m in labels] == ["speaker 3", "speaker 7", "speaker 12"]
    assert all(m.lifetime.sec == 0 and m.lifetime.nanosec == 500_000_000 for m in spheres)
    colours = [(m.color.r, m.color.g, m.color.b) for m in spheres]
    assert len(set(colours)) == 3
    again = M.speaker_markers([_track(7, 0.0, 0.0)], T0).markers[1].color
    assert np.allclose((again.r, again.g, again.b), colours[1])  # colour depends on id only


@pytest.mark.parametrize("storage", STORAGES)
def test_ground_truth_json_round_trip(tmp_path, storage):
    sample = GroundTruthSample(stamp_ns=T0 + 5, speakers=(
        SpeakerTruth(1, 0.2, 0.05, True, position=(1.8, 0.4, 0.1), box=(310, 120, 380, 300)),
        SpeakerTruth(2, -1.0, 0.0, False)))
    with BagWriter(tmp_path / "b", storage) as bag:
        bag.write("/ground_truth/speakers", M.ground_truth_msg(sample), sample.stamp_ns)
    (bm,), _ = _read_all(tmp_path / "b")
    assert bm.msgtype == "std_msgs/msg/String" and json.loads(bm.msg.data)["version"] == 1
    back = M.ground_truth_from_msg(bm.msg)
    assert back.stamp_ns == sample.stamp_ns and len(back.speakers) == 2
    assert back.speakers[0].position == (1.8, 0.4, 0.1)
    assert back.speakers[0].box == (310, 120, 380, 300) and back.speakers[1].box is None
    assert abs(back.speakers[1].azimuth + 1.0) < 1e-12 and back.speakers[1].active is False
    good = json.loads(sample.to_json())
    bad_speaker = [{"id": 1, "azimuth_deg": float("nan")}, {"id": 1, "position": [1.0, 2.0]},
                   {"id": 1}, {"id": float("inf"), "azimuth_deg": 3.0}, "speaker",
                   {"id": 1, "azimuth_deg": 3.0, "box": [1, 2, 3]},
                   {"id": 1, "azimuth_deg": 3.0, "active": "false"},  # a truthy string
                   {"id": 1.7, "azimuth_deg": 3.0}, {"id": True, "azimuth_deg": 3.0}]
    texts = ['{"version": 1}', "[1, 2]", "{not json", json.dumps(dict(good, stamp_ns=None)),
             json.dumps(dict(good, stamp_ns=1.7e18)),  # a double cannot hold the nanoseconds
             json.dumps(dict(good, frame_id=3))]
    texts += [json.dumps(dict(good, speakers=[s])) for s in bad_speaker]
    for text in texts:  # each is refused with a ValueError (the replay counts and skips it)
        with pytest.raises(ValueError):
            M.ground_truth_from_msg(M.TYPESTORE.types["std_msgs/msg/String"](data=text))
    # null direction fields next to a position: the direction comes from the position
    text = json.dumps(dict(good, speakers=[{"id": 3, "position": [1.0, 1.0, 0.0],
                                            "azimuth_deg": None, "elevation_deg": None}]))
    (spk,) = M.ground_truth_from_msg(M.TYPESTORE.types["std_msgs/msg/String"](data=text)).speakers
    assert abs(spk.azimuth - np.pi / 4) < 1e-12 and spk.elevation == 0.0


# ---------------------------------------------------------------------------- scene bags

@dataclass
class FakeRecording:
    """Duck-typed stand-in for sim.scene.SceneRecording."""

    audio: np.ndarray
    sample_rate: int
    start_ns: int
    mic_array: MicArray
    camera: CameraGeometry | None
    camera_pose_in_array: tuple | None
    images: list = field(default_factory=list)
    ground_truth: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _recording(fs=44100, seconds=0.25, camera=True):
    rng = np.random.default_rng(3)
    n = int(fs * seconds) + 7  # not a multiple of the chunk
    audio = (0.3 * rng.standard_normal((4, n))).astype(np.float32)
    start = T0 + 123
    cam = CameraGeometry.from_fov(32, 24, 60.0, t_array_optical=[0.0, 0.0, 0.05]) if camera \
        else None
    images = [ImageFrame(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8),
                         start + int(i * 1e8) + 17) for i in range(3)] if camera else []
    gts = [GroundTruthSample(start + int(i * 5e7), (SpeakerTruth(1, 0.1 * i, 0.0, True),))
           for i in range(5)]
    return FakeRecording(audio, fs, start, MicArray.from_preset("respeaker_usb_4mic_v2"), cam,
                         (cam.r_array_optical, cam.t_array_optical) if camera else None,
                         images, gts, {"room": [4.0, 5.0, 3.0], "rt60": np.float64(0.3),
                                       "seed": 3})


@pytest.mark.parametrize("storage", STORAGES)
def test_write_scene_bag(tmp_path, storage):
    rec = _recording()
    counts = write_scene_bag(rec, tmp_path / "scene", storage=storage, chunk_s=0.02)
    msgs, report = _read_all(tmp_path / "scene")
    assert report.ok
    assert [m.topic for m in msgs[:2]] == ["/tf_static", "/audio/audio_info"]
    stamps = [m.stamp_ns for m in msgs]
    assert stamps == sorted(stamps)
    audio = [m for m in msgs if m.topic == "/audio/audio"]
    chunk = round(0.02 * rec.sample_rate)
    assert counts["/audio/audio"] == len(audio) == -(-rec.audio.shape[1] // chunk)
    for i, m in enumerate(audio):
        k = i * chunk
        assert m.stamp_ns == M.stamp_to_ns(m.msg.header.stamp) == \
            rec.start_ns + round(k * 1e9 / rec.sample_rate)
        assert m.msg.header.frame_id == "mic_array"
    joined = np.concatenate([M.msg_to_audio(m.msg, 4, "S16LE") for m in audio], axis=1)
    q = np.rint(np.clip(rec.audio.astype(np.float64), -1, 1) * 32767) / 32767
    assert joined.shape == rec.audio.shape and np.allclose(joined, q, atol=1e-7)
    images = [m for m in msgs if m.topic == "/camera/image_raw"]
    infos = [m for m in msgs if m.topic == "/camera/camera_info"]
    assert [m.stamp_ns for m in images] == [m.stamp_ns for m in infos] == \
        [f.stamp_ns for f in rec.images]
    assert all(np.array_equal(M.msg_to_bgr(m.msg), f.image) for m, f in zip(images, rec.images))
    assert all(m.msg.header.frame_id == "camera_optical_frame" for m in images + infos)
    tf = msgs[0].msg
    cam = M.camera_from_msgs(infos[0].msg, M.find_transform([tf], "mic_array",
                                                            "camera_optical_frame"))
    assert np.allclose(cam.t_array_optical, rec.camera.t_array_optical)
    gts = [M.ground_truth_from_msg(m.msg) for m in msgs if m.topic == "/ground_truth/speakers"]
    assert [g.stamp_ns for g in gts] == [g.stamp_ns for g in rec.ground_truth]
    custom = yaml.safe_load((tmp_path / "scene" / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]["custom_data"]
    assert json.loads(custom[CUSTOM_SCENE_CONFIG])["rt60"] == 0.3
    assert np.allclose(json.loads(custom[CUSTOM_MIC_ARRAY])["positions"],
                       rec.mic_array.positions)
    summary = bag_summary(tmp_path / "scene")
    assert summary["storage"] == storage and summary["message_count"] == len(msgs)
    assert summary["counts"] == counts and not summary["truncated"]
    assert summary["latched"] == ["/audio/audio_info", "/tf_static"]
    assert summary["types"]["/audio/audio"] == M.AUDIO_STAMPED
    assert summary["start_ns"] == stamps[0] and summary["end_ns"] == stamps[-1]
    assert summary["duration_s"] == (stamps[-1] - stamps[0]) / 1e9
    json.dumps(summary)


def test_scene_bag_without_camera_and_topic_filter(tmp_path):
    rec = _recording(fs=16000, seconds=0.1, camera=False)
    counts = write_scene_bag(rec, tmp_path / "s", sample_format="F32LE")
    assert "/tf_static" not in counts and "/camera/image_raw" not in counts
    reader = read_bag(tmp_path / "s", topics=["/audio/audio"])
    audio = list(reader)
    assert {m.topic for m in audio} == {"/audio/audio"}
    assert reader.report.per_topic == {"/audio/audio": len(audio)}
    joined = np.concatenate([M.msg_to_audio(m.msg, 4, "F32LE") for m in audio], axis=1)
    assert np.array_equal(joined, rec.audio)
    raw = list(read_bag(tmp_path / "s", topics=["/audio/audio_info"], raw=True))
    assert len(raw) == 1 and isinstance(raw[0].msg, bytes)
    assert list(read_bag(tmp_path / "s", topics=["/nope"])) == []


def test_sample_stamps_are_exact_integer_rounding():
    k = np.array([0, 1, 2, 3, 441, 10**9 + 7])
    for fs in (16000, 44100, 48000, 22050, 11025):
        expect = [T0 + round(int(x) * 10**9 / fs) if x < 10**6
                  else T0 + (int(x) * 10**9 * 2 + fs) // (2 * fs) for x in k]
        assert sample_stamps_ns(T0, k, fs).tolist() == expect


# ---------------------------------------------------------------------- foreign definitions

def test_reads_foreign_bag_with_its_own_definitions(tmp_path):
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg("float64 level\nstring label\nint32[] ids\n",
                                      "vendor_msgs/msg/Level"))
    cls = store.types["vendor_msgs/msg/Level"]
    with Writer(tmp_path / "f", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/vendor/level", "vendor_msgs/msg/Level", typestore=store)
        w.write(conn, 5, store.serialize_cdr(cls(level=0.5, label="x",
                                                 ids=np.array([1, 2], np.int32)),
                                             "vendor_msgs/msg/Level"))
    (bm,), report = _read_all(tmp_path / "f")
    assert report.ok and bm.msg.level == 0.5 and bm.msg.label == "x"
    assert list(bm.msg.ids) == [1, 2]


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_definition_overrides_builtin_one(tmp_path, storage):
    # A fork whose AudioInfo carries a header: the bag's definition must win over ours.
    store = get_typestore(Stores.ROS2_HUMBLE)
    store.register(get_types_from_msg(
        "std_msgs/Header header\nuint8 channels\nuint32 sample_rate\nstring sample_format\n"
        "uint32 bitrate\nstring coding_format\n", M.AUDIO_INFO))
    T = store.types
    msg = T[M.AUDIO_INFO](header=T["std_msgs/msg/Header"](
        stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="arr"),
        channels=6, sample_rate=48000, sample_format="S16LE", bitrate=0, coding_format="wave")
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(tmp_path / "f", version=9, storage_plugin=plugin) as w:
        conn = w.add_connection("/audio/audio_info", M.AUDIO_INFO, typestore=store)
        w.write(conn, 7, store.serialize_cdr(msg, M.AUDIO_INFO))
    (bm,), report = _read_all(tmp_path / "f")
    assert report.ok and bm.msg.header.frame_id == "arr"
    assert M.audio_info_fields(bm.msg) == (6, 48000, "S16LE")
    assert "header" not in [n for n, _ in M.TYPESTORE.fielddefs[M.AUDIO_INFO][1]]


# ---------------------------------------------------------------------- damaged bags

def _long_bag(path, storage, compress=False):
    """~3 MB over several mcap chunks: audio every 10 ms, a 100 kB image every 100 ms."""
    rng = np.random.default_rng(4)
    with BagWriter(path, storage, compress=compress) as bag:
        bag.write("/audio/audio_info", M.audio_info_msg(2, 16000), T0)
        for i in range(300):
            stamp = T0 + i * 10_000_000
            bag.write("/audio/audio", M.audio_to_msg(
                rng.uniform(-1, 1, (2, 160)).astype(np.float32), stamp), stamp)
            if i % 10 == 5:
                img = rng.integers(0, 256, (120, 280, 3), dtype=np.uint8)
                bag.write("/camera/image_raw", M.image_to_msg(img, stamp), stamp)
    return _read_all(path)[0]


def _same_messages(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.topic, x.stamp_ns) == (y.topic, y.stamp_ns)


@pytest.fixture(scope="module")
def intact_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("intact")
    bags = {s: (root / s, _long_bag(root / s, s)) for s in STORAGES}
    bags["mcap_zstd"] = (root / "z", _long_bag(root / "z", "mcap", compress=True))
    return bags


def _copy(src, dst):
    shutil.copytree(src, dst)
    return next(p for p in dst.iterdir() if p.suffix in (".mcap", ".db3"))


@pytest.mark.parametrize("kind", ["mcap", "mcap_zstd"])
def test_truncated_mcap_yields_prefix_and_reports(intact_bags, tmp_path, kind):
    src, full = intact_bags[kind]
    f = _copy(src, tmp_path / "cut")
    data = f.read_bytes()
    f.write_bytes(data[:len(data) // 2])
    msgs, report = _read_all(tmp_path / "cut")  # must not raise
    assert report.truncated and report.recovered and report.errors
    assert 0.3 * len(full) < len(msgs) < len(full)
    _same_messages(msgs, full[:len(msgs)])  # exactly the messages before the cut, in order
    for bm in msgs:
        if bm.topic == "/audio/audio":
            assert M.msg_to_audio(bm.msg, 2).shape == (2, 160)
    summary = bag_summary(tmp_path / "cut")
    assert summary["truncated"] and summary["message_count"] == len(msgs)
    # a file with no footer at all, given directly (no metadata.yaml)
    msgs2, report2 = _read_all(f)
    assert report2.truncated and len(msgs2) == len(msgs)


def test_corrupt_chunk_in_complete_mcap_resumes_without_duplicates(intact_bags, tmp_path):
    src, full = intact_bags["mcap"]
    f = _copy(src, tmp_path / "bad")
    scan = _McapScan(f, _Errors(BagReadReport(str(f))))
    with f.open("rb") as fh:
        assert scan.index(fh) and not scan.truncated
    chunks = [u for u in scan.units if u.is_chunk]
    assert len(chunks) >= 3
    victim = chunks[1]
    data = bytearray(f.read_bytes())
    # header of the chunk body: 3 x u64 + u32 + compression string (empty) + u64 records size,
    # then the first inner record: opcode + u64 length -> make the second record's length absurd
    rec0 = victim.offset + 8 * 3 + 4 + 4 + 8
    first_len = int.from_bytes(data[rec0 + 1:rec0 + 9], "little")
    rec1 = rec0 + 9 + first_len
    data[rec1 + 1:rec1 + 9] = (2**40).to_bytes(8, "little")
    f.write_bytes(bytes(data))
    msgs, report = _read_all(tmp_path / "bad")  # rosbags opens it, then fails mid-way
    assert report.truncated and report.recovered
    assert any("reading stopped" in e for e in report.errors)
    keys = [(m.topic, m.stamp_ns) for m in msgs]
    assert len(keys) == len(set(keys))  # nothing yielded twice
    assert [m.stamp_ns for m in msgs] == sorted(m.stamp_ns for m in msgs)
    full_keys = [(m.topic, m.stamp_ns) for m in full]
    assert set(keys) < set(full_keys)
    assert keys[-1] == full_keys[-1]  # chunks after the corrupt one are read
    lost = set(full_keys) - set(keys)
    assert all(victim.start <= stamp <= victim.end for _, stamp in lost)  # only that chunk
    assert (full[0].topic, full[0].stamp_ns) == keys[0]


def test_corrupt_sqlite_yields_messages_before_damage(intact_bags, tmp_path):
    src, full = intact_bags["sqlite3"]
    f = _copy(src, tmp_path / "bad")
    data = bytearray(f.read_bytes())
    n = len(data)
    rng = np.random.default_rng(5)
    data[n // 2:n // 2 + n // 8] = rng.integers(0, 256, n // 8, dtype=np.uint8).tobytes()
    f.write_bytes(bytes(data))
    msgs, report = _read_all(tmp_path / "bad")  # must not raise
    assert report.truncated and report.recovered and report.errors
    assert 0 < len(msgs) < len(full)
    first_lost = next(i for i, (a, b) in enumerate(zip(msgs, full))
                      if (a.topic, a.stamp_ns) != (b.topic, b.stamp_ns))
    assert first_lost > 0.3 * len(full)  # everything before the damage is there, in order
    keys = [(m.topic, m.stamp_ns) for m in msgs]
    assert set(keys) <= {(m.topic, m.stamp_ns) for m in full}
    assert [m.stamp_ns for m in msgs] == sorted(m.stamp_ns for m in msgs)

    # and a .db3 cut in half
    g = _copy(src, tmp_path / "cut")
    g.write_bytes(g.read_bytes()[: g.stat().st_size // 2])
    msgs2, report2 = _read_all(tmp_path / "cut")
    assert report2.truncated and 0 < len(msgs2) < len(full)
    _same_messages(msgs2, full[:len(msgs2)])


def test_missing_bag_and_garbage_file_do_not_raise(tmp_path):
    reader = read_bag(tmp_path / "nope")
    assert list(reader) == [] and reader.errors
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    reader = read_bag(junk)
    assert list(reader) == [] and reader.truncated and reader.errors


def test_writer_without_context_manager_and_empty_bag(tmp_path):
    writer = BagWriter(tmp_path / "w", storage="sqlite3")  # created on construction
    writer.write("/ground_truth/speakers", M.ground_truth_msg(GroundTruthSample(T0)), T0)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RuntimeError):
        writer.write("/x", M.ground_truth_msg(GroundTruthSample(T0)), T0)
    assert [m.stamp_ns for m in read_bag(tmp_path / "w")] == [T0]
    BagWriter(tmp_path / "empty").close()
    reader = read_bag(tmp_path / "empty")
    assert list(reader) == [] and reader.report.ok
    assert bag_summary(tmp_path / "empty")["message_count"] == 0
    with pytest.raises(Exception):
        BagWriter(tmp_path / "w")  # never overwrites


def test_corrupt_payload_is_skipped_and_counted(tmp_path):
    with BagWriter(tmp_path / "b", "mcap") as bag:
        bag.write("/audio/audio_info", M.audio_info_msg(2, 16000), T0)
        bag.write_raw("/audio/audio_info", M.AUDIO_INFO, b"\x00\x01\x00\x00\x07", T0 + 1)
        bag.write("/audio/audio_info", M.audio_info_msg(2, 16000), T0 + 2)
    msgs, report = _read_all(tmp_path / "b")
    assert len(msgs) == 2 and report.messages_skipped == 1 and not report.truncated
    assert not report.ok and report.error_count == 1
