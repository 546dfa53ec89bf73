"""Physical checks of the scene simulator (sim/): measured quantities against geometry and the
requested parameters, not the simulator compared with itself."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import pytest
from scipy.signal import csd, welch

from av_localization_ros.core.geometry import SPEED_OF_SOUND_M_S
from av_localization_ros.core.types import NS_PER_S
from av_localization_ros.sim import (SceneConfig, SceneConfigError, SpeechLibrary, TalkerConfig,
                                     default_speech_dir, diffuse_noise, make_scenario,
                                     room_impulse_responses, simulate_audio, simulate_scene,
                                     validate_config)
from av_localization_ros.sim.render import SKIN_COLOURS
from av_localization_ros.sim.speech import ASSETS_DIR, speaker_of

FS = 16000
C = SPEED_OF_SOUND_M_S
# A wide 3-D array so that delays are many samples long (sub-sample errors stay visible).
WIDE_MICS = [0.15, 0.0, 0.0, -0.15, 0.0, 0.0, 0.0, 0.15, 0.0, 0.0, -0.15, 0.08]


def gcc_phat_delay(x: np.ndarray, y: np.ndarray, max_lag: int, interp: int = 32) -> float:
    """Delay of ``y`` relative to ``x`` in samples (positive: y lags), GCC-PHAT, interpolated."""
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    cross = np.conj(np.fft.rfft(x, n)) * np.fft.rfft(y, n)
    cc = np.fft.irfft(cross / (np.abs(cross) + 1e-12), n * interp)
    m = max_lag * interp
    cc = np.concatenate([cc[-m:], cc[:m + 1]])
    return (np.argmax(cc) - m) / interp


def _scene(**kw) -> SceneConfig:
    base = dict(room_dim=(6.0, 5.0, 3.0), array_position=(2.0, 2.5, 1.2), duration_s=2.0,
                camera_enabled=False, seed=3)
    base.update(kw)
    return SceneConfig(**base)


# ------------------------------------------------------------------------------ acoustics
def test_direct_path_delays_match_geometry():
    """Free field, white-noise source: GCC-PHAT inter-mic delays and the absolute arrival time
    equal the path-length differences / c."""
    p = np.array([2.0, 1.2, 0.4])
    cfg = _scene(rt60_s=0.0, snr_db=60.0, diffuse_noise=False, mic_positions=WIDE_MICS,
                 talkers=[TalkerConfig(waypoints=[(0.0, *p)], speaking=[(0.1, 1.9)],
                                       signal="white_noise")])
    comps = simulate_audio(cfg)
    audio = comps.mixture
    mics = np.asarray(WIDE_MICS).reshape(-1, 3)
    dist = np.linalg.norm(p - mics, axis=1)
    seg = slice(int(0.3 * FS), int(1.7 * FS))
    for i in range(len(mics)):
        for j in range(i + 1, len(mics)):
            est = gcc_phat_delay(audio[i, seg], audio[j, seg], max_lag=20)
            true = (dist[j] - dist[i]) / C * FS
            assert abs(est - true) < 0.1, (i, j, est, true)
    # Absolute timing: emission at t reaches mic 0 at t + d / c.
    est = gcc_phat_delay(comps.dry[0, seg], audio[0, seg], max_lag=200)
    assert abs(est - dist[0] / C * FS) < 0.1


def test_moving_talker_delay_follows_trajectory():
    """Free field, source walking from azimuth -50 to +50 deg: windowed GCC delays between two
    mics follow the geometric delay of the source position at emission time."""
    wps = [(0.0, 1.6, -1.9, 0.3), (3.0, 1.6, 1.9, 0.3)]  # ~1.27 m/s, exercises the crossfades
    cfg = _scene(rt60_s=0.0, snr_db=60.0, diffuse_noise=False, mic_positions=WIDE_MICS,
                 duration_s=3.0,
                 talkers=[TalkerConfig(waypoints=wps, speaking=[(0.0, 3.0)],
                                       signal="white_noise")])
    audio = simulate_audio(cfg).mixture
    mics = np.asarray(WIDE_MICS).reshape(-1, 3)
    tk = cfg.talkers[0]
    errs = []
    for tc in np.arange(0.25, 2.8, 0.25):
        seg = slice(int((tc - 0.08) * FS), int((tc + 0.08) * FS))
        est = gcc_phat_delay(audio[0, seg], audio[2, seg], max_lag=20)
        pos = tk.position(tc - 2.0 / C)  # emission time of what arrives at tc (~2 m away)
        true = (np.linalg.norm(pos - mics[2]) - np.linalg.norm(pos - mics[0])) / C * FS
        errs.append(est - true)
    assert np.max(np.abs(errs)) < 0.25, errs


@pytest.mark.parametrize("rt60", [0.3, 0.8])
@pytest.mark.parametrize("moving", [False, True])
def test_realised_rt60(rt60, moving):
    """Schroeder-integral T30 of generated RIRs within 25 % of the requested RT60."""
    for dim, pos in (((6.0, 5.0, 3.0), (2.0, 2.5, 1.2)), ((8.0, 7.0, 3.5), (3.0, 3.0, 1.0))):
        cfg = _scene(room_dim=dim, array_position=pos, rt60_s=rt60)
        h = room_impulse_responses(cfg, [[1.5, 0.7, 0.3]], moving=moving)[0]
        t30 = np.mean([pra.experimental.measure_rt60(hm, FS, decay_db=30) for hm in h])
        assert abs(t30 - rt60) < 0.25 * rt60, (dim, t30)


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_realised_snr_white_source(snr_db):
    """SNR measured on the output alone: noise power from the silent lead-in, speech power =
    (power while active) - noise power, both averaged over the mics."""
    cfg = _scene(rt60_s=0.4, snr_db=snr_db, duration_s=4.0,
                 talkers=[TalkerConfig(waypoints=[(0.0, 1.5, 0.8, 0.3)], speaking=[(1.0, 3.6)],
                                       signal="white_noise")])
    a = simulate_scene(cfg).audio.astype(np.float64)
    p_noise = np.mean(a[:, int(0.05 * FS):int(0.95 * FS)] ** 2)
    p_act = np.mean(a[:, int(1.0 * FS):int(3.6 * FS)] ** 2)
    measured = 10 * np.log10((p_act - p_noise) / p_noise)
    assert abs(measured - snr_db) < 1.0, measured


def test_realised_snr_speech_over_active_ground_truth():
    """With speech, the same measurement over the ground-truth active stamps (50 ms blocks)."""
    cfg = _scene(rt60_s=0.3, snr_db=12.0, duration_s=5.0, diffuse_noise=False,
                 talkers=[TalkerConfig(waypoints=[(0.0, 1.2, -0.9, 0.2)],
                                       speaking=[(1.0, 4.8)])])
    rec = simulate_scene(cfg)
    a = rec.audio.astype(np.float64)
    p_noise = np.mean(a[:, int(0.05 * FS):int(0.95 * FS)] ** 2)
    blocks = []
    for g in rec.ground_truth:
        k = int(round((g.stamp_ns - rec.start_ns) * FS / NS_PER_S))
        if g.speakers[0].active and k % 800 == 0:  # 20 Hz grid: 50 ms blocks tile the time
            blocks.append(a[:, k:k + 800])
    p_act = np.mean(np.concatenate(blocks, axis=1) ** 2)
    measured = 10 * np.log10((p_act - p_noise) / p_noise)
    assert abs(measured - 12.0) < 1.0, measured


def test_diffuse_noise_coherence_is_sinc():
    """Inter-mic coherence of the generated noise field follows sin(kd)/(kd)."""
    pos = np.array([[0.0, 0.0, 0.0], [0.10, 0.0, 0.0], [0.0, 0.03, 0.0]])
    x = diffuse_noise(pos, 8 * FS, FS, np.random.default_rng(0), spectrum="pink")
    for i, j in ((0, 1), (0, 2)):
        d = np.linalg.norm(pos[i] - pos[j])
        f, pxy = csd(x[i], x[j], fs=FS, nperseg=512)
        _, pxx = welch(x[i], fs=FS, nperseg=512)
        _, pyy = welch(x[j], fs=FS, nperseg=512)
        coh = np.real(pxy) / np.sqrt(pxx * pyy)
        sel = (f > 100) & (f < 7000)
        k = 2 * np.pi * f[sel] / C
        err = np.abs(coh[sel] - np.sin(k * d) / (k * d))
        assert np.mean(err) < 0.04 and np.max(err) < 0.2  # estimation std ~ 0.04 per bin


# ------------------------------------------------------------------------------ ground truth
def test_gt_direction_and_box_match_geometry():
    cfg = _scene(rt60_s=0.3, duration_s=1.5, camera_enabled=True,
                 talkers=[TalkerConfig(waypoints=[(0.0, 2.0, 0.4, 0.3)], speaking=[(0.2, 1.4)]),
                          TalkerConfig(waypoints=[(0.0, -1.5, 0.5, 0.2)], speaking=[])])
    rec = simulate_scene(cfg)
    cam = rec.camera
    r, t = rec.camera_pose_in_array
    assert np.allclose(t, [0, 0, 0.06]) and np.allclose(r @ [0, 0, 1], [1, 0, 0])
    stamps = {im.stamp_ns: im.image for im in rec.images}
    for g in rec.ground_truth:
        front, back = g.speakers
        assert back.box is None  # behind the camera
        p = np.array(front.position)
        assert front.azimuth == pytest.approx(np.arctan2(p[1], p[0]))
        assert front.elevation == pytest.approx(np.arctan2(p[2], np.hypot(p[0], p[1])))
        uv, z = cam.project_points(p)
        u0, v0, u1, v1 = front.box
        assert z > 0 and u0 < uv[0] < u1 and v0 < uv[1] < v1
        if g.stamp_ns in stamps:  # the face is drawn where the head centre projects
            px = stamps[g.stamp_ns][int(round(uv[1])), int(round(uv[0]))].astype(float)
            assert np.max(np.abs(px - SKIN_COLOURS[0])) < 25
    # Box size follows the 0.2 m head: head height ~ f * 0.2 / depth, box spans head+shoulders.
    depth = cam.to_optical(np.array([2.0, 0.4, 0.3]))[2]
    u0, v0, u1, v1 = rec.ground_truth[0].speakers[0].box
    assert 0.45 / 0.8 < (v1 - v0) / (cam.k[1, 1] * 0.48 / depth) < 1.25


def test_gt_stamps_and_moving_talker_follows_waypoints():
    cfg = make_scenario("moving3", 7)
    rec = simulate_scene(cfg)
    st = np.array([g.stamp_ns for g in rec.ground_truth])
    assert np.all(np.diff(st) > 0)
    assert {im.stamp_ns for im in rec.images} <= set(st.tolist())
    grid = [rec.start_ns + k * 50_000_000 for k in range(int(np.ceil(cfg.duration_s * 20)))]
    assert set(grid) <= set(st.tolist())
    assert len(rec.images) == int(np.ceil(cfg.duration_s * cfg.fps - 1e-9))
    for i, tk in enumerate(cfg.talkers):
        track = np.array([g.speakers[i].position for g in rec.ground_truth])
        ts = (st - rec.start_ns) / NS_PER_S
        wp = np.asarray(tk.waypoints)
        for t, x, y, z in wp[wp[:, 0] < cfg.duration_s]:
            k = int(np.argmin(np.abs(ts - t)))
            # Within one GT step of the waypoint, at <= 0.5 m/s.
            assert np.linalg.norm(track[k] - [x, y, z]) <= 0.5 * abs(ts[k] - t) + 1e-6
        speed = np.linalg.norm(np.diff(track, axis=0), axis=1) / np.diff(ts)
        assert speed.max() <= 0.5 + 1e-6
        for g in rec.ground_truth:
            s = g.speakers[i]
            p = np.array(s.position)
            assert s.azimuth == pytest.approx(np.arctan2(p[1], p[0]))
            if s.box is not None:
                uv, _ = rec.camera.project_points(p)
                assert s.box[0] <= uv[0] <= s.box[2] and s.box[1] <= uv[1] <= s.box[3]
            in_iv = any(a <= (g.stamp_ns - rec.start_ns) / NS_PER_S < b for a, b in tk.speaking)
            assert not s.active or in_iv  # never active outside a speaking interval
    # Inside intervals the talker is active most of the time (speech pauses excepted).
    act = [g.speakers[i].active for g in rec.ground_truth for i, tk in enumerate(cfg.talkers)
           if any(a + 0.1 <= (g.stamp_ns - rec.start_ns) / NS_PER_S < b
                  for a, b in tk.speaking)]
    assert np.mean(act) > 0.7
    json.dumps(rec.config)
    assert SceneConfig.from_dict(json.loads(json.dumps(rec.config))) == cfg


def test_recording_fields_and_determinism():
    cfg = make_scenario("demo", 1)
    rec = simulate_scene(cfg)
    assert [f.name for f in dataclasses.fields(rec)] == [
        "audio", "sample_rate", "start_ns", "mic_array", "camera", "camera_pose_in_array",
        "images", "ground_truth", "config"]
    assert rec.audio.dtype == np.float32 and rec.audio.shape == (4, 8 * FS)
    assert np.max(np.abs(rec.audio)) < 1.0
    assert rec.start_ns == 1_700_000_000_000_000_000 and rec.sample_rate == FS
    im = rec.images[0].image
    assert im.shape == (480, 640, 3) and im.dtype == np.uint8
    assert len(rec.images) == 8 * 15
    again = simulate_scene(make_scenario("demo", 1))
    assert np.array_equal(rec.audio, again.audio)
    assert np.array_equal(rec.images[50].image, again.images[50].image)
    other = simulate_scene(make_scenario("demo", 2))
    assert not np.allclose(rec.audio, other.audio)
    # The walker crosses the view: off-screen at first, on-screen later.
    walker = [g.speakers[1].box for g in rec.ground_truth]
    assert walker[0] is None and walker[-1] is not None


# ------------------------------------------------------------------------------ scenarios
def test_scenarios_follow_their_specification():
    for seed in range(6):
        c = make_scenario("static1", seed)
        p = np.asarray(c.talkers[0].waypoints[0][1:])
        assert 1.0 <= np.linalg.norm(p) <= 3.0 and 0.2 <= c.rt60_s <= 0.9 and 5 <= c.snr_db <= 30
        assert 4 <= c.room_dim[0] <= 8 and 3 <= c.room_dim[1] <= 7 and 2.5 <= c.room_dim[2] <= 3.5
        c = make_scenario("overlap2", seed)
        a = [np.arctan2(t.waypoints[0][2], t.waypoints[0][1]) for t in c.talkers]
        assert abs((a[0] - a[1] + np.pi) % (2 * np.pi) - np.pi) >= np.deg2rad(40) - 1e-9
        t = np.linspace(0, c.duration_s, 500)
        both = np.mean([all(any(x <= ti < y for x, y in tk.speaking) for tk in c.talkers)
                        for ti in t])
        assert both > 0.5
        c = make_scenario("moving3", seed)
        assert len(c.talkers) == 3 and 10 <= c.duration_s <= 15
        assert max(tk.max_speed() for tk in c.talkers) <= 0.5 + 1e-6
        assert all(tk.speaking for tk in c.talkers)
    azs = [np.arctan2(*make_scenario("static1", s).talkers[0].waypoints[0][2:0:-1])
           for s in range(40)]
    assert np.min(azs) < -2.0 and np.max(azs) > 2.0  # full circle
    assert make_scenario("moving3", 11) == make_scenario("moving3", 11)
    assert make_scenario("moving3", 11) != make_scenario("moving3", 12)
    with pytest.raises(ValueError, match="unknown scenario"):
        make_scenario("nope", 0)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("change, message", [
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 5.0, 0.0, 0.3)])]), "outside the room"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1.0, 2.2, 0.3)])]), "closer than 0.5 m"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1, 0, 0), (0.0, 1.5, 0, 0)])]),
     "strictly increasing"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 0.1, 0.1, 0.0)])]), "of the array"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1, 0, 0)], speaking=[(1.0, 9.0)])]),
     "speaking interval"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1, 0, 0)], signal="music")]), "signal"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1, y, 0)]) for y in (-1, 0, 1, 1.5)]),
     "0 to 3 talkers"),
    (dict(rt60_s=3.0), "rt60_s"),
    (dict(room_dim=(40.0, 40.0, 12.0), rt60_s=0.1, array_position=(20, 20, 1)), "not reachable"),
    (dict(mic_array="no_such_array"), "mic array"),
    (dict(array_position=(5.95, 2.5, 1.2)), "mic array"),
    (dict(speech_dir="/nonexistent/speech"), "speech_dir"),
    (dict(camera_enabled=True, camera_rpy_deg=(20.0, 0.0, 0.0)), "roll"),
    (dict(talkers=[TalkerConfig(waypoints=[(0.0, 1.0, 0.0, 0.2), (0.5, 1.0, 1.4, 0.2)])]),
     "rir_step_max_m"),  # 2.8 m/s: 5.6 cm between the closest RIR anchors
])
def test_invalid_configs_raise_clear_errors(change, message):
    cfg = _scene(talkers=[TalkerConfig(waypoints=[(0.0, 1.0, 0.0, 0.2)])])
    cfg = dataclasses.replace(cfg, **change)
    with pytest.raises(SceneConfigError, match=message):
        validate_config(cfg)
    with pytest.raises(SceneConfigError):
        simulate_scene(cfg)


# ------------------------------------------------------------------------------ speech
def test_speech_dir_from_the_environment_is_recorded_in_the_config(monkeypatch):
    """AVLOC_SPEECH_DIR changes the audio, so the recording's config (stored in the bag) must
    name it, or the bag cannot be regenerated from its own metadata."""
    monkeypatch.setenv("AVLOC_SPEECH_DIR", str(ASSETS_DIR))
    cfg = _scene(talkers=[TalkerConfig(waypoints=[(0.0, 1.0, 0.0, 0.2)])])
    assert cfg.speech_dir is None
    assert simulate_scene(cfg).config["speech_dir"] == str(ASSETS_DIR)


def test_shipped_speech_assets_load(monkeypatch):
    files = sorted(ASSETS_DIR.glob("*.flac"))
    assert len(files) >= 8 and sum(f.stat().st_size for f in files) < 400_000
    assert (ASSETS_DIR / "README.md").is_file()
    monkeypatch.delenv("AVLOC_SPEECH_DIR", raising=False)
    lib = SpeechLibrary()
    assert lib.source == "assets" and len(lib) == len(files) and lib.sample_rate == FS
    assert all(1.0 < len(c) / FS < 5.0 for c in lib.clips)
    # Trimmed of silence: speech within the first and last 50 ms.
    assert all(min(np.max(np.abs(c[:800])), np.max(np.abs(c[-800:]))) > 1e-3 for c in lib.clips)
    u = lib.utterance(np.random.default_rng(0), 3.3)
    assert u.shape == (int(3.3 * FS),) and u.dtype == np.float32 and np.max(np.abs(u)) <= 1.0
    # Resampling path: the same clips read at 8 kHz are half as long.
    lib8 = SpeechLibrary(ASSETS_DIR, sample_rate=8000)
    assert abs(len(lib8.clips[0]) * 2 - len(lib.clips[0])) < 400


@pytest.mark.parametrize("stem, speaker", [
    ("cmu_arctic_us_aew_a0002", "cmu_arctic_us_aew"), ("vctk_p286_011", "vctk_p286"),
    ("rtvc_1320_00000", "rtvc_1320"), ("alice-12", "alice"), ("xmas_male_cc0", "xmas_male_cc0"),
    ("librivox_flatland_female_pd", "librivox_flatland_female_pd")])
def test_speaker_of_strips_the_utterance_number(stem, speaker):
    assert speaker_of(stem) == speaker


def _best_clip(segment: np.ndarray, clips) -> tuple[int, float]:
    """Index of the clip a dry-speech segment was cut from (largest cross-correlation peak
    relative to the clip's energy) and the margin over the runner-up."""
    scores = []
    for c in clips:
        n = 1 << int(np.ceil(np.log2(len(segment) + len(c))))
        xc = np.fft.irfft(np.fft.rfft(segment, n) * np.conj(np.fft.rfft(c, n)), n)
        scores.append(np.max(np.abs(xc)) / float(np.dot(c, c)))
    order = np.argsort(scores)[::-1]
    return int(order[0]), scores[order[0]] / max(scores[order[1]], 1e-12)


def test_each_talker_keeps_one_voice(monkeypatch):
    """A talker is one person: every utterance of a talker comes from one speaker's clips, and
    the talkers of a scene are different speakers (the shipped clips: one voice each)."""
    monkeypatch.delenv("AVLOC_SPEECH_DIR", raising=False)
    lib = SpeechLibrary()
    cfg = make_scenario("moving3", 5)
    comp = simulate_audio(cfg)
    used = []
    for i, tk in enumerate(cfg.talkers):
        x = comp.dry[i]
        found = set()
        for a, b in tk.speaking:
            seg = x[int(a * FS):int(b * FS)]
            if len(seg) < FS // 2:
                continue
            k, margin = _best_clip(seg, lib.clips)
            assert margin > 1.5, (i, a, margin)
            found.add(speaker_of(lib.names[k]))
        assert len(found) == 1, (i, found)
        used.append(found.pop())
    assert len(set(used)) == len(cfg.talkers), used


def test_real_speech_directory_resampled():
    d = default_speech_dir()
    if d is None:
        pytest.skip("shared real-speech folder not present (fresh clone)")
    lib = SpeechLibrary(d, sample_rate=FS)
    assert len(lib) + len(lib.skipped) == len([p for p in Path(d).iterdir() if p.is_file()
                                               and p.suffix.lower() in (".wav", ".flac", ".mp3")])
    assert len(lib) >= 1 and all(c.dtype == np.float32 for c in lib.clips)
