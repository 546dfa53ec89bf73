"""StreamingLocalizer: scheduling, data stamps and bad input on a physically simulated stream."""
import numpy as np
import pytest

from av_localization_ros.core.params import defaults
from av_localization_ros.core.stream import StreamingLocalizer
from av_localization_ros.core.types import ImageFrame
from roomsim import FS, RESPEAKER, simulate, source_at, syllables

T0 = 1_700_000_000_000_000_000
AZ_DEG = 60.0


@pytest.fixture(scope="module")
def scene_audio():
    """4-mic ReSpeaker array in a reverberant room, a talker-like source at 60 deg, 2 m."""
    return simulate(RESPEAKER, [source_at(AZ_DEG)], [syllables(3 * FS, 0)], rt60=0.3,
                    center=(2.5, 2.0, 1.2), max_order=10, snr_db=40)


def feed(loc, audio, chunk=320, stamp_fn=None):
    outs = []
    for k in range(0, audio.shape[1] - chunk + 1, chunk):
        stamp = T0 + (k * 1_000_000_000) // FS if stamp_fn is None else stamp_fn(k)
        outs += loc.on_audio(audio[:, k:k + chunk], stamp)
    return outs


def params(**over):
    p = defaults()
    p["heatmap.enabled"] = False
    p.update(over)
    return p


@pytest.mark.parametrize("lookahead_s", [0.0, 0.192])
def test_audio_only_rate_stamps_and_direction(scene_audio, lookahead_s):
    loc = StreamingLocalizer(params(**{"audio.lookahead_s": lookahead_s}))
    assert loc.on_audio_info(4, FS, "S16LE")
    outs = feed(loc, scene_audio)
    # 10 Hz in audio time: the first window ends 0.256 s after the first sample and describes
    # the time lookahead_s before its end; then every 0.1 s
    stamps = np.array([o.stamp_ns for o in outs])
    assert len(outs) == pytest.approx((3.0 - 0.256) / 0.1, abs=2)
    assert np.all(np.diff(stamps) == 100_000_000)
    assert stamps[0] == T0 + 256_000_000 - int(round(lookahead_s * 1e9))
    for o in outs:
        assert o.stamp_ns == o.doa.stamp_ns
    tracked = [t for o in outs[10:] for t in o.tracks]
    assert tracked, "no track confirmed"
    err = np.abs((np.rad2deg([t.azimuth for t in tracked]) - AZ_DEG + 180) % 360 - 180)
    assert np.median(err) < 5.0


def test_lookahead_moves_the_estimate_onto_the_time_it_describes(scene_audio):
    """A talker starting at 1.5 s: with a lookahead L the first voice-active output is stamped
    L earlier than with causal windows, i.e. it is no longer late by the window's lag."""
    audio = scene_audio.copy()
    onset = int(1.5 * FS)
    rng = np.random.default_rng(3)
    audio[:, :onset] = 1e-3 * rng.standard_normal((4, onset)).astype(np.float32)
    first_active = {}
    for lookahead in (0.0, 0.192):
        loc = StreamingLocalizer(params(**{"audio.lookahead_s": lookahead, "doa.rate_hz": 50.0}))
        loc.on_audio_info(4, FS, "S16LE")
        outs = feed(loc, audio)
        first_active[lookahead] = next(o.stamp_ns for o in outs if o.doa.voice_active) - T0
    assert first_active[0.0] >= 1.5e9  # causal: only after the onset
    shift = (first_active[0.0] - first_active[0.192]) / 1e9
    assert shift == pytest.approx(0.192, abs=0.021)  # one 20 ms step of slack


def test_image_driven_steps_use_image_stamps(scene_audio):
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    img = np.full((48, 64, 3), 90, np.uint8)
    image_stamps = [T0 + int(0.5e9) + i * 66_666_667 for i in range(20)]
    outs = []
    for s in image_stamps:  # images arrive before the audio that covers them
        outs += loc.on_image(ImageFrame(img, s))
    outs += feed(loc, scene_audio)
    image_outs = [o for o in outs if o.image is not None]
    assert [o.stamp_ns for o in image_outs] == image_stamps
    # while the camera drives, no audio-only ticks are interleaved
    assert not [o for o in outs if o.image is None and image_stamps[0] < o.stamp_ns < image_stamps[-1]]


def test_an_image_stamped_far_ahead_of_the_audio_does_not_stall_the_camera(scene_audio):
    """One camera frame stamped 5 s in the future (a clock jump): dropped and counted; the
    frames after it keep driving the pipeline (queued, it held them all back for 5 s)."""
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    img = np.full((48, 64, 3), 90, np.uint8)
    chunk, outs, sent = 320, [], []
    for k in range(0, scene_audio.shape[1] - chunk + 1, chunk):
        stamp = T0 + (k * 1_000_000_000) // FS
        outs += loc.on_audio(scene_audio[:, k:k + chunk], stamp)
        if k % (3 * chunk) == 0 and k > 0.5 * FS:  # ~15 FPS, each frame after its audio
            frame_ns = stamp - 200_000_000
            if not sent or frame_ns > sent[-1]:
                bad = len(sent) == 5
                outs += loc.on_image(ImageFrame(img, frame_ns + (5 * 10**9 if bad else 0)))
                sent.append(frame_ns)
    image_outs = [o.stamp_ns for o in outs if o.image is not None]
    assert loc.drops["image_ahead_of_audio"] == 1
    assert len(image_outs) >= len(sent) - 3 and sent[-2] in image_outs


def test_channel_and_rate_mismatch_are_counted(scene_audio):
    loc = StreamingLocalizer(params())
    assert not loc.on_audio_info(6, FS, "S16LE")
    assert loc.drops["channel_mismatch"] == 1
    assert feed(loc, scene_audio[:, :3200]) == []
    assert loc.drops["audio_after_unusable_info"] == 10
    loc = StreamingLocalizer(params(sample_rate=16000))
    assert not loc.on_audio_info(4, 48000, "S16LE")
    assert loc.drops["sample_rate_mismatch"] == 1
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    assert loc.on_audio(scene_audio[:2, :320], T0) == []
    assert loc.drops["channel_mismatch"] == 1


def test_nan_gap_and_backwards_stamps_are_counted_not_crashing(scene_audio):
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    audio = scene_audio.copy()
    audio[:, FS:FS + 2000] = np.nan  # 125 ms of NaN
    outs = feed(loc, audio)
    d = loc.diagnostics()
    assert d["audio.nonfinite_samples"] == 2000  # sample instants with any non-finite channel
    assert d["drop.audio_window_invalid"] >= 1
    assert all(np.all(np.isfinite(o.doa.doa_map)) for o in outs)
    # gap of 100 ms in the middle and one chunk stamped backwards
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")

    def stamp(k):
        s = T0 + (k * 1_000_000_000) // FS
        return s + (100_000_000 if k >= FS else 0)

    outs = feed(loc, scene_audio, stamp_fn=stamp)
    last = stamp(scene_audio.shape[1] // 320 * 320 - 320)
    loc.on_audio(scene_audio[:, :320], last - 10_000_000)  # 10 ms before the previous chunk
    d = loc.diagnostics()
    assert d["audio.gaps"] == 1 and d["audio.drop_backwards_stamp"] == 1
    assert len(outs) > 20


def test_bad_images_are_dropped(scene_audio):
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    assert loc.on_image(ImageFrame(np.zeros((48, 64), np.uint8), T0 + 1)) == []
    assert loc.on_image(ImageFrame(np.zeros((0, 0, 3), np.uint8), T0 + 2)) == []
    assert loc.drops["bad_image"] == 2


def test_a_window_shorter_than_two_stft_frames_is_a_configuration_error():
    """40 ms = 640 samples with nfft 512 / hop 256: one frame, so every map would be empty."""
    loc = StreamingLocalizer(params(**{"audio.window_s": 0.04, "audio.lookahead_s": 0.0}))
    assert not loc.on_audio_info(4, FS, "S16LE")
    assert loc.drops["bad_configuration"] == 1


def test_lookahead_longer_than_the_window_is_a_configuration_error():
    loc = StreamingLocalizer(params(**{"audio.lookahead_s": 0.5}))
    assert not loc.on_audio_info(4, FS, "S16LE")
    assert loc.drops["bad_configuration"] == 1


def test_negative_map_smoothing_is_a_configuration_error():
    loc = StreamingLocalizer(params(**{"doa.map_smoothing_s": -1.0}))
    assert not loc.on_audio_info(4, FS, "S16LE")
    assert loc.drops["bad_configuration"] == 1


def test_an_unusable_audio_info_stops_the_stream_it_replaces(scene_audio):
    """After a usable AudioInfo, one that cannot be used (8 channels for a 4-mic array, or a
    rate other than the configured one) must not leave the old layout decoding the new audio:
    its audio is dropped and counted until a usable AudioInfo arrives."""
    loc = StreamingLocalizer(params())
    assert loc.on_audio_info(4, FS, "S16LE")
    assert len(feed(loc, scene_audio[:, :FS])) > 5
    assert not loc.on_audio_info(8, FS, "S16LE")
    assert loc.audio_format is None and loc.drops["channel_mismatch"] == 1
    assert feed(loc, scene_audio[:, :3200]) == []
    assert loc.drops["audio_after_unusable_info"] == 10
    assert loc.on_audio_info(4, FS, "S16LE")  # usable again: a new stream
    assert len(feed(loc, scene_audio[:, :FS])) > 5

    assert not loc.on_audio_info(4, 3_800_000, "S16LE")  # beyond any audio interface
    assert loc.drops["bad_audio_info"] == 1

    loc = StreamingLocalizer(params(sample_rate=16000))
    assert loc.on_audio_info(4, FS, "S16LE")
    assert not loc.on_audio_info(4, 48000, "S16LE")
    assert loc.drops["sample_rate_mismatch"] == 1
    assert feed(loc, scene_audio[:, :3200]) == []
    assert loc.drops["audio_after_unusable_info"] == 10


def test_audio_stamps_jumping_back_restart_every_stage():
    """A looping bag or a restarted driver: the audio clock goes back 3 s. The second pass must
    be tracked on its own (a talker at -90 deg, IDs from 1), not frozen on the first pass's
    tracks (the tracker rejected every update as stale), and the camera keeps driving."""
    first = simulate(RESPEAKER, [source_at(60.0)], [syllables(3 * FS, 0)], snr_db=30)
    second = simulate(RESPEAKER, [source_at(-90.0)], [syllables(3 * FS, 1)], snr_db=30)
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "F32LE")
    img = np.full((48, 64, 3), 90, np.uint8)

    def run(audio):
        outs, chunk = [], 320
        for k in range(0, audio.shape[1] - chunk + 1, chunk):
            stamp = T0 + (k * 1_000_000_000) // FS
            outs += loc.on_audio(audio[:, k:k + chunk], stamp)
            if k % (3 * chunk) == 0:  # ~15 FPS, each frame before its audio
                outs += loc.on_image(ImageFrame(img, stamp + 50_000_000))
        return outs

    run(first)
    outs = run(second)
    assert loc.diagnostics()["audio.reset_backwards_jump"] == 1
    assert len([o for o in outs if o.image is not None]) > 30
    last = outs[-1]
    assert [t.track_id for t in last.tracks] == [1]
    assert abs(np.rad2deg(last.tracks[0].azimuth) + 90.0) < 10.0
    d = loc.diagnostics()
    assert d["tracker.stale_updates"] == 0 and d["tracker.resets"] == 1


def test_an_image_queued_before_the_audio_starts_is_checked_when_it_starts(scene_audio):
    """A frame stamped 60 s ahead that arrives before the first audio chunk (nothing to check
    it against yet) is dropped as soon as audio arrives, instead of holding back every step."""
    reference = StreamingLocalizer(params())
    reference.on_audio_info(4, FS, "S16LE")
    n_ref = len(feed(reference, scene_audio))
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    assert loc.on_image(ImageFrame(np.full((48, 64, 3), 90, np.uint8), T0 + 60 * 10**9)) == []
    outs = feed(loc, scene_audio)
    assert len(outs) == n_ref > 20
    assert loc.drops["image_ahead_of_audio"] == 1
    assert loc.data_stamp_ns <= T0 + 4 * 10**9  # the bogus stamp does not become "data time"


def test_output_stamps_strictly_increase_whatever_the_camera_does(scene_audio):
    """A camera whose frames arrive 300 ms after their audio (more than the lookahead), one
    frame from 1.5 s in the past, a frame re-sent with the same stamp, and at the end a frozen
    camera re-sending one frame: outputs never go back in time or repeat, the late, past and
    repeated frames are counted, the late camera still drives the pipeline once it has caught
    up with the audio-only steps, and the frozen one does not stop the audio-only steps."""
    loc = StreamingLocalizer(params())
    loc.on_audio_info(4, FS, "S16LE")
    img = np.full((48, 64, 3), 90, np.uint8)
    chunk, outs, sent = 320, [], []
    frozen_from = 2 * FS
    for k in range(0, scene_audio.shape[1] - chunk + 1, chunk):
        stamp = T0 + (k * 1_000_000_000) // FS
        outs += loc.on_audio(scene_audio[:, k:k + chunk], stamp)
        if k % (3 * chunk) == 0 and k > FS // 2:
            if k >= frozen_from:
                outs += loc.on_image(ImageFrame(img, sent[-1]))
                continue
            sent.append(stamp - 300_000_000)
            outs += loc.on_image(ImageFrame(img, sent[-1]))
            if len(sent) == 15:
                outs += loc.on_image(ImageFrame(img, sent[-1] - 1_500_000_000))
            if len(sent) == 20:
                outs += loc.on_image(ImageFrame(img, sent[-1]))  # re-sent
    stamps = [o.stamp_ns for o in outs]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    image_outs = [o.stamp_ns for o in outs if o.image is not None]
    assert len(image_outs) >= len(sent) - 8 and sent[-1] in image_outs
    assert loc.drops["image_not_after_previous_output"] >= 1  # the camera's first frames
    assert loc.drops["image_stamp_not_increasing"] >= 10  # the past, re-sent and frozen ones
    ticks_after = [o.stamp_ns for o in outs if o.image is None and o.stamp_ns > sent[-1]]
    assert len(ticks_after) >= 5  # frozen camera: audio-only steps resume


def test_heatmap_audio_is_the_models_window_or_none(scene_audio):
    """Until a whole second of audio before the image is buffered, the heatmap network gets no
    audio (counted) rather than the 0.256 s DoA window with its lookahead, tiled to 1 s."""
    from av_localization_ros.av.runtime import HeatmapRunner

    runner = HeatmapRunner(backend="onnxruntime")
    lengths = []
    set_audio = runner.set_audio
    runner.set_audio = lambda w: (lengths.append(w.n_samples), set_audio(w))
    loc = StreamingLocalizer(params(), heatmap_runner=runner)
    loc.on_audio_info(4, FS, "S16LE")
    img = np.full((48, 64, 3), 90, np.uint8)
    outs, chunk = [], 320
    for k in range(0, scene_audio.shape[1] - chunk + 1, chunk):
        stamp = T0 + (k * 1_000_000_000) // FS
        outs += loc.on_audio(scene_audio[:, k:k + chunk], stamp)
        if k % (3 * chunk) == 0 and k >= FS // 4:
            outs += loc.on_image(ImageFrame(img, stamp + 50_000_000))
    assert 5 <= loc.drops["heatmap_audio_unavailable"] <= 20  # the images of the first second
    assert lengths and set(lengths) == {FS}
    assert sum(o.heatmap is not None for o in outs) > 20
