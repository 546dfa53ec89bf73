"""Latency of the live localizer over DDS: image in -> outputs out.

    .venv/bin/python benchmarks/bench_dds_latency.py [--fps 30] [--duration 10] [--no-heatmap]

The localizer (DDS shell) runs in its own process, as deployed; this process plays a camera
(640x480 bgr8 + camera_info at ``--fps``) and a 4-channel 16 kHz S16LE microphone array over
Cyclone DDS on loopback only, and receives the outputs. At each frame tick the audio up to the
frame's stamp + ``audio.lookahead_s`` is published first, then the image, so the measured
latency is transport + processing + transport of the results (never waiting for audio). A live
camera adds the lookahead itself on top (the step for image time t needs audio up to t +
lookahead); the report states it.

* ``image -> speakers``: image publish to receipt of the speakers PoseArray with its stamp;
* ``image -> all outputs``: ... to receipt of the last output of that step (incl. overlay);
* throughput: images/s sent and steps/s out; frames that produced no output are counted.

Prints p50 and p99 (ms) after a 1 s warm-up. Machine load matters: say what it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from av_localization_ros.bag import messages as m  # noqa: E402
from av_localization_ros.core.params import load_params  # noqa: E402
from av_localization_ros.nodes.dds import procs, wire  # noqa: E402
from av_localization_ros.nodes.localizer_logic import OUTPUT_TOPICS  # noqa: E402

NS = 1_000_000_000


def cdr_stamp(cdr: bytes, msgtype: str) -> int:
    """The header stamp straight from the CDR bytes (no decode: the sink stays cheap)."""
    off = 8 if msgtype == "visualization_msgs/msg/MarkerArray" else 4  # markers[0].header
    if len(cdr) < off + 8:
        return -1
    sec = int.from_bytes(cdr[off:off + 4], "little", signed=True)
    nsec = int.from_bytes(cdr[off + 4:off + 8], "little")
    return sec * NS + nsec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of camera time")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--no-heatmap", action="store_true")
    ap.add_argument("--no-overlay", action="store_true")
    ap.add_argument("--params-file", default=str(ROOT / "config" / "params.yaml"))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_dds_"))
    env = procs.loopback_env(tmp, apply=True)
    extra = (["--no-heatmap"] if args.no_heatmap else []) + (["--no-overlay"] if args.no_overlay else [])
    log = tmp / "localizer.log"
    loc = procs.start("av_localization_ros.nodes.dds.localizer",
                      ["--params-file", args.params_file, "--log-level", "WARNING", *extra], env, log)
    src = wire.DdsNode("bench_source")
    sink = wire.DdsNode("bench_sink")
    recv: dict[int, dict[str, float]] = {}
    lock = threading.Lock()

    def on_output(suffix, msgtype):
        def cb(cdr):
            t = time.monotonic()
            with lock:
                recv.setdefault(cdr_stamp(cdr, msgtype), {})[suffix] = t
        return cb

    subs = [sink.create_subscription(t, f"/av_localization/{s}", on_output(s, t),
                                     wire.QosProfile(True, 100, False), raw=True)
            for s, t in OUTPUT_TOPICS.items()]
    diags: list = []
    sink.create_subscription("diagnostic_msgs/msg/DiagnosticArray", "/diagnostics", diags.append,
                             wire.QosProfile(True, 10, False))
    stop = threading.Event()
    spinner = threading.Thread(target=sink.spin, args=(stop, 0.02), daemon=True)
    try:
        if not procs.wait_for_line(log, "READY", loc, 60):
            print(log.read_text()[-3000:])
            return 1
        spinner.start()
        p_info = src.create_publisher(m.AUDIO_INFO, "/audio/audio_info", wire.QOS_LATCHED)
        p_tf = src.create_publisher(m.TF_MESSAGE, "/tf_static", wire.QOS_LATCHED)
        p_audio = src.create_publisher(m.AUDIO_STAMPED, "/audio/audio", wire.QosProfile(True, 100, False))
        p_img = src.create_publisher(m.IMAGE, "/camera/image_raw", wire.QosProfile(True, 5, False))
        p_cam = src.create_publisher(m.CAMERA_INFO, "/camera/camera_info", wire.QosProfile(True, 5, False))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (
                all(p.matched() for p in (p_audio, p_img, p_cam, p_info)) and all(s.matched() for s in subs)):
            time.sleep(0.02)
        w, h, fs, nch = args.width, args.height, args.rate, args.channels
        fx = w / (2 * np.tan(np.radians(35)))
        t0 = time.time_ns()
        p_info.publish(m.audio_info_msg(nch, fs, "S16LE"))
        p_tf.publish(m.tf_static_msg(m.ARRAY_FRAME, m.CAMERA_FRAME,
                                     np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]]).T,
                                     np.array([0.0, 0.0, 0.06]), t0))
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        # a talker at +20 deg: a delayed copy per mic (integer-sample approximation) + noise
        n_frames = int(args.duration * args.fps)
        pre = int(0.5 * fs)  # 0.5 s of audio before the first frame
        ahead = int(round(float(load_params(args.params_file)["audio.lookahead_s"]) * fs))
        total = pre + int(np.ceil(args.duration * fs)) + ahead + 512  # covers the last frame
        src_sig = rng.standard_normal(total + 64).astype(np.float32) * 0.2
        audio = np.stack([np.roll(src_sig, i)[:total] for i in range(nch)]) \
            + 0.01 * rng.standard_normal((nch, total)).astype(np.float32)
        sent_samples = 0
        sent: dict[int, float] = {}
        start_wall = time.monotonic()
        for k in range(n_frames):
            due = start_wall + k / args.fps
            while (d := due - time.monotonic()) > 0:
                time.sleep(min(d, 0.005))
            frame = pre + int(np.ceil(k / args.fps * fs))
            upto = frame + ahead
            while sent_samples < upto:
                n = min(512, upto - sent_samples)
                stamp = t0 + sent_samples * NS // fs
                p_audio.publish(m.audio_to_msg(audio[:, sent_samples:sent_samples + n], stamp))
                sent_samples += n
            stamp = t0 + frame * NS // fs  # the frame's stamp (audio is sent up to + lookahead)
            p_cam.publish(m.new_msg(m.CAMERA_INFO, header=m.header(stamp, m.CAMERA_FRAME), width=w,
                                    height=h, distortion_model="plumb_bob", d=np.zeros(5),
                                    k=np.array([fx, 0, w / 2, 0, fx, h / 2, 0, 0, 1]),
                                    r=np.eye(3).ravel(),
                                    p=np.array([fx, 0, w / 2, 0, 0, fx, h / 2, 0, 0, 0, 1, 0])))
            p_img.publish(m.image_to_msg(img, stamp, m.CAMERA_FRAME, "bgr8"))
            sent[stamp] = time.monotonic()
        send_s = time.monotonic() - start_wall
        time.sleep(2.0)
    finally:
        stop.set()
        procs.stop(loc)
        src.close()
    expected = {s for s, t in OUTPUT_TOPICS.items()}
    first, last, missing = [], [], 0
    warm_until = start_wall + args.warmup
    out_times = []
    with lock:
        for stamp, t_send in sent.items():
            got = recv.get(stamp)
            if not got or "speakers" not in got:
                missing += 1
                continue
            out_times.append(max(got.values()))
            if t_send < warm_until:
                continue
            first.append(got["speakers"] - t_send)
            last.append(max(got.values()) - t_send)
    sink.close()
    out_span = (max(out_times) - min(out_times)) if len(out_times) > 1 else float("nan")
    res = {
        "frames_sent": len(sent), "fps_target": args.fps,
        "images_per_s_sent": round(len(sent) / send_s, 2),
        "steps_out": len(out_times), "steps_per_s_out": round((len(out_times) - 1) / out_span, 2) if len(out_times) > 1 else 0,
        "frames_without_output": missing,
        "image_to_speakers_ms": {"p50": round(1e3 * float(np.percentile(first, 50)), 2),
                                 "p99": round(1e3 * float(np.percentile(first, 99)), 2)} if first else None,
        "image_to_all_outputs_ms": {"p50": round(1e3 * float(np.percentile(last, 50)), 2),
                                    "p99": round(1e3 * float(np.percentile(last, 99)), 2)} if last else None,
        "outputs_received": {k: sum(k in v for v in recv.values()) for k in sorted(expected)}, "image": f"{args.width}x{args.height} bgr8",
        "audio": f"{args.channels} ch {args.rate} Hz S16LE",
        "heatmap": not args.no_heatmap, "overlay": not args.no_overlay,
        "lookahead_ms_not_included": round(1e3 * ahead / fs, 1),
        "cpus": os.cpu_count(),
    }
    if diags:
        from av_localization_ros.nodes.diagnostics import diagnostics_to_dict

        d = next(iter(diagnostics_to_dict(diags[-1]).values()), {})
        res["localizer_stage_ms"] = {k[len("latency_ms."):]: float(v) for k, v in d.items()
                                     if k.startswith("latency_ms.")}
        res["localizer_drops"] = {k: int(v) for k, v in d.items() if k.startswith("drop.")}
    res["localizer_warnings"] = [ln for ln in log.read_text(errors="replace").splitlines()
                                 if "WARNING" in ln][:10]
    print(json.dumps(res, indent=2))
    if res["image_to_speakers_ms"]:
        print(f"image -> speakers     p50 {res['image_to_speakers_ms']['p50']} ms   p99 {res['image_to_speakers_ms']['p99']} ms")
        print(f"image -> all outputs  p50 {res['image_to_all_outputs_ms']['p50']} ms   p99 {res['image_to_all_outputs_ms']['p99']} ms")
    print(f"(a live camera adds audio.lookahead_s = {res['lookahead_ms_not_included']} ms: "
          "the step for image time t needs audio up to t + lookahead)")
    print(f"images/s in {res['images_per_s_sent']}, steps/s out {res['steps_per_s_out']}, "
          f"frames without output {missing}/{len(sent)}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
