"""Replay evaluation end to end on simulated scene bags (mcap and sqlite3), and bad bags."""
import json
import shutil

import pytest

from av_localization_ros.bag.reader import read_bag
from av_localization_ros.bag.writer import BagWriter, write_scene_bag
from av_localization_ros.cli import main as cli_main
from av_localization_ros.core.params import defaults
from av_localization_ros.evaluation.replay import replay_bag
from av_localization_ros.sim.scenarios import make_scenario
from av_localization_ros.sim.scene import simulate_scene


@pytest.fixture(scope="module")
def recording():
    return simulate_scene(make_scenario("demo", 0))


@pytest.fixture(scope="module")
def scene_bag(recording, tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "demo_mcap"
    write_scene_bag(recording, path, storage="mcap", sample_format="S16LE")
    return path


def audio_only_params():
    p = defaults()
    p["heatmap.enabled"] = False
    return p


def input_stamps(bag):
    stamps = set()
    audio = []
    for item in read_bag(bag, topics=["/audio/audio", "/camera/image_raw"]):
        s = item.msg.header.stamp.sec * 1_000_000_000 + item.msg.header.stamp.nanosec
        if item.topic == "/camera/image_raw":
            stamps.add(s)
        else:
            audio.append((s, item.msg.audio.data.size))
    return stamps, audio


def test_replay_writes_outputs_stamped_from_the_data(recording, scene_bag, tmp_path):
    res = replay_bag(scene_bag, audio_only_params(), tmp_path / "out", progress=False)
    assert res.n_outputs > 50
    assert res.real_time_factor > 1.0
    image_stamps, _ = input_stamps(scene_bag)
    topics = {}
    for item in read_bag(tmp_path / "out" / "bag"):
        topics.setdefault(item.topic, []).append(item)
        if hasattr(item.msg, "header"):
            s = item.msg.header.stamp.sec * 1_000_000_000 + item.msg.header.stamp.nanosec
            assert s in image_stamps, f"{item.topic} stamp {s} is not an input image stamp"
    for t in ("doa", "doa_map", "speakers", "speaker_markers"):
        assert f"/av_localization/{t}" in topics
    assert topics["/av_localization/doa_map"][0].msg.encoding == "32FC1"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]
    assert metrics["doa"]["n_source_frames"] > 0
    # the demo is an easy scene: the DoA must mostly be right, against the simulator's geometry
    assert metrics["doa"]["acc_at_10"] > 0.7
    for name in ("azimuth_timeline.png", "doa_map_snapshots.png", "overlay.gif"):
        assert (tmp_path / "out" / "plots" / name).stat().st_size > 1000


def test_sqlite3_f32_bag_gives_the_same_estimates(recording, scene_bag, tmp_path):
    bag = tmp_path / "demo_sqlite"
    write_scene_bag(recording, bag, storage="sqlite3", sample_format="F32LE")
    a = replay_bag(scene_bag, audio_only_params(), tmp_path / "a", progress=False, make_plots=False)
    b = replay_bag(bag, audio_only_params(), tmp_path / "b", progress=False, make_plots=False,
                   storage="sqlite3")
    assert a.n_outputs == b.n_outputs
    ma, mb = a.metrics["doa"], b.metrics["doa"]
    # S16 quantisation vs float: the same estimates up to a grid step
    assert abs(ma["azimuth_mae_deg"] - mb["azimuth_mae_deg"]) < 2.0


def copy_without(src, dst, drop_topic):
    with BagWriter(dst) as w:
        for item in read_bag(src):
            if item.topic != drop_topic:
                w.write(item.topic, item.msg, item.stamp_ns)


def test_missing_audio_info_is_counted_not_crashing(scene_bag, tmp_path):
    bag = tmp_path / "no_info"
    copy_without(scene_bag, bag, "/audio/audio_info")
    res = replay_bag(bag, audio_only_params(), tmp_path / "out", progress=False, make_plots=False)
    assert res.n_outputs == 0
    assert res.diagnostics["drop.audio_before_info"] > 100


def test_wrong_message_types_and_bad_ground_truth_are_counted(scene_bag, tmp_path):
    """A driver's header-less AudioData on /audio/audio (no stamp to use) and a ground-truth
    String that is not the documented JSON: counted, the rest of the bag is replayed."""
    from av_localization_ros.bag import messages as m

    bag = tmp_path / "mixed"
    with BagWriter(bag) as w:
        n_bad = 0
        for item in read_bag(scene_bag):
            if item.topic == "/audio/audio" and n_bad < 20:
                w.write("/audio/audio", item.msg.audio, item.stamp_ns, msgtype=m.AUDIO_DATA)
                n_bad += 1
            elif item.topic == "/ground_truth/speakers" and n_bad == 20:
                w.write(item.topic, m.TYPESTORE.types[m.STRING](data="{not json"), item.stamp_ns)
                n_bad += 1
            else:
                w.write(item.topic, item.msg, item.stamp_ns)
    res = replay_bag(bag, audio_only_params(), tmp_path / "out", progress=False, make_plots=False)
    assert res.diagnostics["drop.wrong_message_type"] == 20
    assert res.diagnostics["drop.bad_ground_truth"] == 1
    assert res.n_outputs > 30 and res.metrics is not None


def test_simulated_bags_give_camera_info_before_each_image(scene_bag, tmp_path):
    """At equal log time CameraInfo comes first, so no image is processed without it."""
    order = [item.topic for item in read_bag(scene_bag, topics=["/camera/image_raw",
                                                                "/camera/camera_info"])]
    assert order[:2] == ["/camera/camera_info", "/camera/image_raw"]
    res = replay_bag(scene_bag, audio_only_params(), tmp_path / "out", progress=False,
                     make_plots=False, write_bag=False)
    assert res.diagnostics.get("drop.image_without_camera_info", 0) == 0


def test_ground_truth_in_another_frame_is_counted_not_misread(scene_bag, tmp_path):
    """Positions in the camera frame would be read as array-frame directions: refused."""
    import json

    from av_localization_ros.bag import messages as m

    bag = tmp_path / "camera_frame_truth"
    with BagWriter(bag) as w:
        for item in read_bag(scene_bag):
            msg = item.msg
            if item.topic == "/ground_truth/speakers":
                d = json.loads(msg.data)
                d["frame_id"] = "camera_optical_frame"
                msg = m.TYPESTORE.types[m.STRING](data=json.dumps(d))
            w.write(item.topic, msg, item.stamp_ns)
    res = replay_bag(bag, audio_only_params(), tmp_path / "out", progress=False,
                     make_plots=False, write_bag=False)
    assert res.diagnostics["drop.bad_ground_truth"] > 100 and res.metrics is None


def test_cli_simulate_never_deletes_what_is_not_a_bag(tmp_path, capsys):
    """-o pointing at a folder of other files, or at a file, is refused (it used to be
    rmtree'd); a bag folder from an earlier run is replaced; a missing --speech-dir is a
    one-line error, not a traceback."""
    notes = tmp_path / "work"
    (notes / "sub").mkdir(parents=True)
    (notes / "notes.txt").write_text("keep me")
    assert cli_main(["simulate", "-o", str(notes), "--scenario", "static1"]) == 2
    assert (notes / "notes.txt").read_text() == "keep me" and (notes / "sub").is_dir()
    assert "not a rosbag2 directory" in capsys.readouterr().err
    assert cli_main(["simulate", "-o", str(notes / "notes.txt")]) == 2
    assert cli_main(["simulate", "-o", str(tmp_path / "b"), "--speech-dir",
                     str(tmp_path / "none")]) == 2
    assert "speech_dir" in capsys.readouterr().err
    bag = tmp_path / "bag"
    for _ in range(2):  # the second run replaces the first bag
        assert cli_main(["simulate", "-o", str(bag), "--scenario", "static1"]) == 0
    assert (bag / "metadata.yaml").is_file()


def test_truncated_bag_is_replayed_up_to_the_cut(scene_bag, tmp_path):
    bag = tmp_path / "cut"
    shutil.copytree(scene_bag, bag)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    res = replay_bag(bag, audio_only_params(), tmp_path / "out", progress=False, make_plots=False)
    assert res.diagnostics["bag.truncated"] is True
    assert res.n_outputs > 5


def test_channel_count_not_matching_geometry_is_counted(scene_bag, tmp_path):
    p = audio_only_params()
    p["mic_array_preset"] = "matrix_voice"  # 8 mics, the bag has 4 channels
    res = replay_bag(scene_bag, p, tmp_path / "out", progress=False, make_plots=False)
    assert res.n_outputs == 0
    assert res.diagnostics["drop.channel_mismatch"] >= 1


def test_cli_replay_and_errors(scene_bag, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text("/**:\n  ros__parameters:\n    heatmap:\n      enabled: false\n")
    assert cli_main(["replay", str(scene_bag), "--params", str(params), "-o",
                     str(tmp_path / "o"), "--no-plots"]) == 0
    assert "real-time factor" in capsys.readouterr().out
    assert (tmp_path / "o" / "metrics.json").exists()
    assert cli_main(["replay", str(tmp_path / "missing"), "-o", str(tmp_path / "x")]) == 2
    params.write_text("/**:\n  ros__parameters:\n    doa:\n      rate_hz: 1.0e9\n")
    capsys.readouterr()
    assert cli_main(["replay", str(scene_bag), "--params", str(params), "-o",
                     str(tmp_path / "y")]) == 2
    assert "doa.rate_hz: 1000000000.0 is outside" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    # values each in range that cannot run together: stops before the replay, not 0 outputs
    params.write_text("/**:\n  ros__parameters:\n    mic_array_preset: nosuch\n")
    assert cli_main(["replay", str(scene_bag), "--params", str(params), "-o",
                     str(tmp_path / "w")]) == 2
    assert "nosuch" in capsys.readouterr().err and not (tmp_path / "w").exists()
    with pytest.raises(SystemExit) as exc:  # argparse: usage and status 2, no traceback
        cli_main(["simulate", "-o", str(tmp_path / "z"), "--seed", "-1"])
    assert exc.value.code == 2 and "a seed is >= 0" in capsys.readouterr().err


def test_a_bag_with_another_audio_info_definition_is_counted_not_crashing(tmp_path):
    """The bag's own definition of audio_common_msgs/msg/AudioInfo is another fork's
    (format/channels/rate/chunk): rosbags decodes it as such; the replay counts it as unusable
    and drops the audio after it instead of raising AttributeError."""
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from av_localization_ros.bag import messages as m

    foreign = get_typestore(Stores.ROS2_HUMBLE)
    foreign.register(get_types_from_msg("int32 format\nint32 channels\nint32 rate\nint32 chunk\n",
                                        m.AUDIO_INFO))
    bag, t0, fs = tmp_path / "foreign", 1_000_000_000, 16000
    x = (0.1 * np.random.default_rng(0).standard_normal((4, fs))).astype(np.float32)
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        info = w.add_connection("/audio/audio_info", m.AUDIO_INFO, typestore=foreign)
        w.write(info, t0, foreign.serialize_cdr(
            foreign.types[m.AUDIO_INFO](format=8, channels=4, rate=fs, chunk=320), m.AUDIO_INFO))
        audio = w.add_connection("/audio/audio", m.AUDIO_STAMPED, typestore=m.TYPESTORE)
        for s in range(0, fs, 320):
            stamp = t0 + s * 1_000_000_000 // fs
            w.write(audio, stamp, m.TYPESTORE.serialize_cdr(
                m.audio_to_msg(x[:, s:s + 320], stamp, "a", "F32LE"), m.AUDIO_STAMPED))
    res = replay_bag(bag, audio_only_params(), tmp_path / "out", progress=False, make_plots=False)
    assert res.n_outputs == 0
    assert res.diagnostics["drop.bad_audio_info"] == 1
    assert res.diagnostics["drop.audio_after_unusable_info"] == 50
