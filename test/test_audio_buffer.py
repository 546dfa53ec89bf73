"""Ring buffer: sample-accurate stamps and every kind of bad stream timing."""
import numpy as np
import pytest

from av_localization_ros.core.audio_buffer import AudioInputError, AudioRingBuffer

FS = 16000
T0 = 1_700_000_000_000_000_000


def chunk_stamp(k):
    return T0 + (k * 1_000_000_000 + FS // 2) // FS


def ramp(k0, n, m=4):
    """Each sample's value encodes its absolute index, so any slice can be checked exactly."""
    idx = np.arange(k0, k0 + n, dtype=np.float64)
    return np.stack([(idx + 1000 * c) / 1e6 for c in range(m)]).astype(np.float32)


def test_contiguous_stream_is_sample_accurate():
    buf = AudioRingBuffer(4, FS, capacity_s=2.0)
    for k in range(0, FS, 320):
        assert buf.push(ramp(k, 320), chunk_stamp(k)).status in ("start", "ok")
    # the window starting at sample 5000's stamp holds exactly samples 5000..5511
    win, valid = buf.window_at(chunk_stamp(5000), 512)
    assert valid == 1.0
    np.testing.assert_array_equal(win.samples, ramp(5000, 512))
    assert win.stamp_ns == chunk_stamp(5000)
    assert buf.end_stamp_ns == chunk_stamp(FS)
    assert buf.counts["gaps"] == 0 and buf.counts["overlaps"] == 0


def test_gap_is_zero_filled_and_masked():
    buf = AudioRingBuffer(4, FS)
    buf.push(ramp(0, 320), chunk_stamp(0))
    r = buf.push(ramp(640, 320), chunk_stamp(640))  # 320 samples missing
    assert r.status == "gap"
    assert buf.counts["gap_samples_filled"] == 320
    win, valid = buf.window_at(chunk_stamp(0), 960)
    assert valid == pytest.approx(640 / 960)
    np.testing.assert_array_equal(win.samples[:, 320:640], 0.0)
    np.testing.assert_array_equal(win.samples[:, 640:], ramp(640, 320))


def test_overlap_is_trimmed_and_duplicate_dropped():
    buf = AudioRingBuffer(4, FS)
    buf.push(ramp(0, 320), chunk_stamp(0))
    r = buf.push(ramp(160, 320), chunk_stamp(160))  # first 160 samples already buffered
    assert r.status == "overlap" and r.samples_written == 160
    win, _ = buf.window_at(chunk_stamp(0), 480)
    np.testing.assert_array_equal(win.samples, ramp(0, 480))
    assert buf.push(ramp(0, 320), chunk_stamp(0) + 1).status in ("duplicate", "backwards")


def test_backwards_stamp_dropped_and_big_jump_resets():
    buf = AudioRingBuffer(4, FS)
    buf.push(ramp(0, 320), chunk_stamp(0))
    buf.push(ramp(320, 320), chunk_stamp(320))
    assert buf.push(ramp(0, 320), chunk_stamp(0) - 5_000_000).status == "backwards"
    assert buf.counts["drop_backwards_stamp"] == 1
    r = buf.push(ramp(0, 320), T0 - 5_000_000_000)  # bag replay looped: restart
    assert r.status == "reset" and buf.counts["reset_backwards_jump"] == 1
    assert buf.start_stamp_ns == T0 - 5_000_000_000


def test_long_gap_is_a_discontinuity():
    buf = AudioRingBuffer(4, FS, max_gap_fill_s=0.5)
    buf.push(ramp(0, 320), chunk_stamp(0))
    r = buf.push(ramp(0, 320), chunk_stamp(0) + 3_000_000_000)
    assert r.status == "discontinuity" and buf.counts["discontinuities"] == 1
    assert buf.start_stamp_ns == chunk_stamp(0) + 3_000_000_000


def test_nonfinite_samples_are_zeroed_and_masked():
    buf = AudioRingBuffer(4, FS)
    x = ramp(0, 320)
    x[1, 10] = np.nan
    x[2, 20] = np.inf
    buf.push(x, chunk_stamp(0))
    win, valid = buf.window_at(chunk_stamp(0), 320)
    assert np.all(np.isfinite(win.samples))
    assert valid == pytest.approx(318 / 320)
    assert buf.counts["nonfinite_samples"] == 2


def test_wrong_channel_count_raises_clearly():
    buf = AudioRingBuffer(4, FS)
    with pytest.raises(AudioInputError, match="expected \\(4, n\\)"):
        buf.push(np.zeros((6, 320), np.float32), T0)


def test_clock_drift_is_estimated():
    # stamps from a clock running 200 ppm fast relative to the sample clock
    buf = AudioRingBuffer(4, FS, max_jitter_s=0.01)
    for i, k in enumerate(range(0, 10 * FS, 320)):
        stamp = T0 + int(round(k / FS * (1 + 200e-6) * 1e9))
        buf.push(ramp(k, 320), stamp)
    assert buf.drift_ppm == pytest.approx(200.0, rel=0.05)


def test_wraparound_and_expiry():
    buf = AudioRingBuffer(4, FS, capacity_s=1.0)
    for k in range(0, 3 * FS, 1000):
        buf.push(ramp(k, 1000), chunk_stamp(k))
    assert buf.window_at(chunk_stamp(0), 100) is None  # overwritten
    win, _ = buf.latest(FS)
    np.testing.assert_array_equal(win.samples, ramp(2 * FS, FS))


@pytest.mark.parametrize("ppm", [300.0, -300.0])
def test_drift_estimate_survives_the_corrections_it_causes(ppm):
    """A device clock off by 300 ppm drifts past the 2 ms jitter every ~7 s; the gaps filled
    (or overlaps trimmed) then must not turn the drift fit into a sawtooth (it read 300, -15,
    -233, 300 ... for a true -300 ppm)."""
    fs, chunk = 16000, 320
    buf = AudioRingBuffer(2, fs, capacity_s=2.0, max_jitter_s=0.002, max_gap_fill_s=0.5)
    x = np.zeros((2, chunk), np.float32)
    readings = []
    for k in range(int(60 * fs / chunk)):
        buf.push(x, 10**18 + int(round(k * chunk * 1e9 / fs * (1 + ppm * 1e-6))))
        if k and k % 500 == 0:
            readings.append(buf.drift_ppm)
    counts = buf.counts
    assert counts["gaps"] + counts["overlaps"] >= 5  # corrections did happen
    assert all(abs(r - ppm) < 0.1 * abs(ppm) for r in readings[1:]), readings
