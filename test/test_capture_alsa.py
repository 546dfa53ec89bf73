"""Capture, tested for real: PortAudio -> ALSA ``file`` PCM reading a multichannel raw file.

The .asoundrc lives under a temporary HOME, so alsa-lib reads it in a child process started with
that HOME (alsa-lib reads ~/.asoundrc once per process). Its slave is ``type null``, which is not
paced in real time: PortAudio receives the file as fast as it polls, which is exactly what makes a
stalled consumer overflow the capture queue.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from av_localization_ros.nodes.capture import pyaudio_available

ROOT = Path(__file__).resolve().parents[1]
OK, WHY = pyaudio_available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY)

RATE, CHANNELS, CHUNK = 16000, 4, 512
PERIOD_NS = 1_000_000_000 // RATE  # 62500 ns exactly

CHILD = textwrap.dedent(r"""
    import json, sys, time
    import numpy as np
    from av_localization_ros.nodes.capture import AudioCapture, CaptureConfig, ChunkSequencer
    args = json.loads(sys.argv[1])
    import pyaudio
    pa = pyaudio.PyAudio()
    names = [pa.get_device_info_by_index(i)["name"] for i in range(pa.get_device_count())]
    if "avtest" not in names:
        print(json.dumps({"skip": "ALSA did not enumerate the file PCM 'avtest' (devices: %s)" % names}))
        sys.exit(0)
    cfg = CaptureConfig(device=args["device"], channels=args["channels"], sample_rate=args["rate"],
                        sample_format=args["format"], chunk_frames=args["chunk"],
                        queue_chunks=args["queue"])
    cap = AudioCapture(cfg, clock_ns=lambda: 1_700_000_000_000_000_000, pa=pa)
    chunks = []
    cap.start()
    try:
        if args["stall_s"]:
            time.sleep(args["stall_s"])  # the consumer stalls
        deadline = time.monotonic() + 10
        got = 0
        while got < args["frames"] and time.monotonic() < deadline:
            c = cap.read(timeout_s=1.0)
            if c is None:
                continue
            chunks.append(c)
            got += c.n_frames
    finally:
        cap.stop()
        pa.terminate()
    seq = ChunkSequencer()
    for c in chunks:
        seq.push(c)
    np.save(args["out"], np.frombuffer(b"".join(c.data for c in chunks), np.uint8))
    print(json.dumps({
        "device_index": cap.device_index, "device_name": cap.device_name,
        "stamps": [c.stamp_ns for c in chunks], "first": [c.first_sample for c in chunks],
        "n": [c.n_frames for c in chunks], "epochs": [c.epoch for c in chunks],
        "stats": cap.stats(), "discontinuities": seq.discontinuities,
        "missing": seq.missing_frames}))
""")


def _run_capture(tmp_path: Path, raw: bytes, fmt: str, frames: int, queue: int,
                 stall_s: float = 0.0, device="avtest") -> dict:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    infile = tmp_path / "in.raw"
    infile.write_bytes(raw)
    (home / ".asoundrc").write_text(textwrap.dedent(f"""
        pcm.avtest {{
            type file
            slave.pcm "null"
            file "/dev/null"
            infile "{infile}"
            format "raw"
            hint {{ show on description "av_localization test capture" }}
        }}
    """))
    out = tmp_path / "captured.npy"
    args = dict(device=device, channels=CHANNELS, rate=RATE, format=fmt, chunk=CHUNK,
                queue=queue, frames=frames, stall_s=stall_s, out=str(out))
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=45)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert proc.returncode == 0 and lines, f"capture child failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    res = json.loads(lines[-1])
    if "skip" in res:
        pytest.skip(res["skip"])
    res["data"] = np.load(out).tobytes()
    return res


def _check_stamps(res: dict) -> None:
    stamps = np.array(res["stamps"], dtype=np.int64)
    first = np.array(res["first"], dtype=np.int64)
    assert np.all(np.diff(stamps) > 0), "stamps must be strictly increasing"
    # one sample period per sample, exactly, across the whole stream (gaps included)
    assert np.array_equal(stamps - stamps[0], (first - first[0]) * PERIOD_NS)


@pytest.mark.parametrize("fmt", ["S16LE", "F32LE"])
def test_capture_bit_exact_and_stamps(tmp_path, fmt):
    rng = np.random.default_rng(3)
    frames = RATE  # 1 s
    if fmt == "S16LE":
        ref = rng.integers(-32768, 32767, size=(frames, CHANNELS), dtype=np.int16).astype("<i2")
    else:
        ref = rng.uniform(-1, 1, size=(frames, CHANNELS)).astype("<f4")
    raw = ref.tobytes()
    res = _run_capture(tmp_path, raw, fmt, frames=frames, queue=4 * frames // CHUNK)
    assert res["device_name"] == "avtest"
    assert res["discontinuities"] == 0, res["stats"]
    assert res["first"][0] == 0
    assert res["data"][:len(raw)] == raw, "captured samples differ from the file"
    _check_stamps(res)
    assert all(n == CHUNK for n in res["n"])
    assert res["stats"].get("overruns.host_overflow", 0) == 0


def test_capture_device_by_index(tmp_path):
    raw = np.arange(CHUNK * 4 * CHANNELS, dtype="<i2").tobytes()
    res = _run_capture(tmp_path, raw, "S16LE", frames=CHUNK * 4, queue=64, device="0")
    assert res["device_index"] == 0 and res["data"][:len(raw)] == raw


def test_overrun_counted_when_consumer_stalls(tmp_path):
    raw = np.arange(RATE * CHANNELS, dtype=np.int64).astype("<i2").tobytes()
    res = _run_capture(tmp_path, raw, "S16LE", frames=CHUNK * 16, queue=4, stall_s=0.3)
    stats = res["stats"]
    assert stats.get("overruns", 0) >= 1 and stats.get("overruns.consumer_stall", 0) >= 1, stats
    assert stats["dropped_frames"] >= CHUNK
    # the consumer sees the gap in the sample counter, and the stamps still tell the truth
    assert res["discontinuities"] >= 1 and res["missing"] >= CHUNK
    _check_stamps(res)
    # the first queued chunks are the start of the file, bit-exact
    assert res["data"][:4 * CHUNK * CHANNELS * 2] == raw[:4 * CHUNK * CHANNELS * 2]


def test_dds_capture_shell_publishes_bit_exact_stamped_audio(tmp_path, monkeypatch):
    """The capture node's DDS shell over the ALSA file PCM; received here over loopback DDS."""
    pytest.importorskip("cyclonedds", reason="cyclonedds is not installed")
    from av_localization_ros.bag import messages as m
    from av_localization_ros.nodes.dds import procs, wire

    home = tmp_path / "home"
    home.mkdir()
    rng = np.random.default_rng(5)
    ref = rng.integers(-32768, 32767, size=(RATE, CHANNELS), dtype=np.int16).astype("<i2")
    infile = tmp_path / "in.raw"
    infile.write_bytes(ref.tobytes())
    (home / ".asoundrc").write_text(
        f'pcm.avtest {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{infile}"\n format "raw"\n}}\n')
    env = procs.loopback_env(tmp_path)
    for key in procs.DDS_VARS:
        monkeypatch.setenv(key, env[key])
    env["HOME"] = str(home)
    node = wire.DdsNode("capture_sink")
    chunks, infos = [], []
    node.create_subscription(m.AUDIO_STAMPED, "/audio/audio", chunks.append, wire.QosProfile(True, 1000, False))
    node.create_subscription(m.AUDIO_INFO, "/audio/audio_info", infos.append, wire.QOS_LATCHED)
    log = tmp_path / "capture.log"
    proc = None
    try:
        proc = procs.start("av_localization_ros.nodes.dds.capture",
                           ["--device", "avtest", "--channels", str(CHANNELS), "--sample-rate", str(RATE),
                            "--chunk-frames", str(CHUNK), "--queue-chunks", "1000"], env, log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (len(chunks) < 40 or not infos):
            node.spin_once(0.05)
            if proc.poll() is not None:
                break
        assert infos and chunks, log.read_text()[-3000:]
    finally:
        procs.stop(proc)
        node.close()
    info = infos[-1]
    assert (info.channels, info.sample_rate, info.sample_format) == (CHANNELS, RATE, "S16LE")
    stamps = np.array([m.stamp_to_ns(c.header.stamp) for c in chunks])
    assert np.all(np.diff(stamps) > 0)
    flat = ref.reshape(-1)
    compared = 0
    for c, s in zip(chunks, stamps):
        k = (s - stamps[0]) // PERIOD_NS  # the sample index the stamp claims
        assert (s - stamps[0]) % PERIOD_NS == 0
        data = np.frombuffer(np.asarray(c.audio.data, np.uint8).tobytes(), "<i2")
        assert data.size == CHUNK * CHANNELS
        if (k + CHUNK) <= RATE:
            assert np.array_equal(data, flat[k * CHANNELS:(k + CHUNK) * CHANNELS]), k
            compared += 1
    assert compared >= 10


def test_dds_capture_shell_refuses_an_impossible_device_at_once(tmp_path):
    """200 channels from the file PCM: PortAudio refuses (-9998); the shell exits with status 2
    and a one-line error at once - not a traceback, and not after --duration (the timer was
    a non-daemon thread that kept the process alive)."""
    pytest.importorskip("cyclonedds", reason="cyclonedds is not installed")
    from av_localization_ros.nodes.dds import procs

    home = tmp_path / "home"
    home.mkdir()
    infile = tmp_path / "in.raw"
    infile.write_bytes(bytes(4096))
    (home / ".asoundrc").write_text(
        f'pcm.avtest {{\n type file\n slave.pcm "null"\n file "/dev/null"\n infile "{infile}"\n format "raw"\n}}\n')
    env = procs.loopback_env(tmp_path)
    env["HOME"] = str(home)
    log = tmp_path / "capture.log"
    t0 = time.monotonic()
    proc = procs.start("av_localization_ros.nodes.dds.capture",
                       ["--device", "avtest", "--channels", "200", "--duration", "20"], env, log)
    try:
        rc = proc.wait(timeout=15)
    finally:
        procs.stop(proc)
    text = log.read_text()
    assert rc == 2, text[-2000:]
    assert time.monotonic() - t0 < 12 and "Traceback" not in text
    assert "cannot start capture" in text


def _capture_without_device():
    from av_localization_ros.nodes.capture import AudioCapture, CaptureConfig
    cfg = CaptureConfig(channels=CHANNELS, sample_rate=RATE, sample_format="S16LE",
                        chunk_frames=CHUNK, queue_chunks=8)
    return AudioCapture(cfg, clock_ns=lambda: 1_700_000_000_000_000_000, pa=object())


def test_a_malformed_buffer_keeps_the_sample_counter_on_time():
    """PortAudio passed frame_count frames whatever the buffer held: the next chunk's first
    sample and stamp must count them (they used to shift every later stamp, unseen)."""
    cap = _capture_without_device()
    good = bytes(CHUNK * CHANNELS * 2)
    for data in (good, good[:100], good):
        cap._callback(data, CHUNK, {}, 0)
    a, b = cap.read(0.1), cap.read(0.1)
    assert (a.first_sample, b.first_sample) == (0, 2 * CHUNK)
    assert b.stamp_ns - a.stamp_ns == 2 * CHUNK * PERIOD_NS
    assert cap.stats()["malformed_buffers"] == 1 and cap.stats()["dropped_frames"] == CHUNK


def test_stop_cleans_up_everything_when_the_device_is_gone():
    calls = []

    class GoneStream:
        def stop_stream(self):
            calls.append("stop")
            raise OSError(-9999, "Unanticipated host error")

        def close(self):
            calls.append("close")

    class PA:
        def terminate(self):
            calls.append("terminate")

    cap = _capture_without_device()
    cap._stream, cap._pa, cap._own_pa = GoneStream(), PA(), True
    cap.stop()  # must not raise
    assert calls == ["stop", "close", "terminate"] and cap._stream is None
