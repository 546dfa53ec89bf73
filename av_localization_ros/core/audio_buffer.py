"""Sample-accurate timestamped multichannel ring buffer.

Every sample has an absolute index ``k`` counted from an anchor (the first chunk after a start
or a resync). Its time is

    t(k) = t_anchor + round(k * 1e9 / fs)            [ns, integer arithmetic]

so the stamp of a chunk's first sample plus the sample rate gives the time of any sample.
A chunk stamped ``s`` is expected at ``t(k_next)``; the stamp error ``e = s - t(k_next)``
classifies it:

* ``|e| <= max_jitter``: contiguous; ``e`` feeds the clock-drift estimate (least-squares slope
  of ``e`` against time, reported in ppm);
* ``e > max_jitter``: a gap of ``round(e fs)`` samples, zero-filled and marked invalid when
  shorter than ``max_gap_fill_s``, else a discontinuity that re-anchors the buffer;
* ``e < -max_jitter``: an overlap; the already-buffered leading samples are trimmed (a chunk
  that is entirely old is dropped). A stamp earlier than the previous chunk's stamp is
  "backwards": dropped, or the buffer restarts when the jump exceeds ``reset_backwards_s``
  (a bag replay that loops).

NaN/Inf samples are zeroed and marked invalid. Windows report the fraction of valid samples.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from .types import NS_PER_S, AudioWindow


class AudioInputError(ValueError):
    """A chunk cannot be used at all (shape, channel count)."""


@dataclass(frozen=True)
class PushResult:
    status: str  # ok | gap | overlap | discontinuity | backwards | duplicate | reset | start
    samples_written: int
    stamp_error_ns: int = 0


class AudioRingBuffer:
    def __init__(self, n_channels: int, sample_rate: int, capacity_s: float = 10.0,
                 max_jitter_s: float = 0.002, max_gap_fill_s: float = 0.5,
                 reset_backwards_s: float = 1.0):
        if n_channels < 1 or sample_rate <= 0:
            raise ValueError(f"bad audio format: {n_channels} channels at {sample_rate} Hz")
        self.n_channels = int(n_channels)
        self.sample_rate = int(sample_rate)
        self.capacity = int(round(capacity_s * sample_rate))
        self._data = np.zeros((self.n_channels, self.capacity), dtype=np.float32)
        self._valid = np.zeros(self.capacity, dtype=bool)
        self.max_jitter_ns = int(max_jitter_s * NS_PER_S)
        self.max_gap_fill = int(round(max_gap_fill_s * sample_rate))
        self.reset_backwards_ns = int(reset_backwards_s * NS_PER_S)
        self.counts: Counter = Counter()
        self._anchor_ns: int | None = None
        self._next = 0  # absolute index of the next sample to be written
        self._last_chunk_ns: int | None = None
        self._drift_t: list[float] = []
        self._drift_e: list[float] = []
        self._corrected_s = 0.0

    # --- time <-> index -------------------------------------------------------------------
    def time_of(self, k: int) -> int:
        """Stamp (ns) of absolute sample ``k``."""
        return self._anchor_ns + (k * NS_PER_S + self.sample_rate // 2) // self.sample_rate

    def index_of(self, stamp_ns: int) -> int:
        """Absolute index of the sample nearest to ``stamp_ns``."""
        return int(round((stamp_ns - self._anchor_ns) * self.sample_rate / NS_PER_S))

    @property
    def started(self) -> bool:
        return self._anchor_ns is not None

    @property
    def oldest_index(self) -> int:
        return max(0, self._next - self.capacity)

    @property
    def end_stamp_ns(self) -> int | None:
        """Time just after the newest buffered sample."""
        return None if self._anchor_ns is None else self.time_of(self._next)

    @property
    def start_stamp_ns(self) -> int | None:
        return None if self._anchor_ns is None else self.time_of(self.oldest_index)

    @property
    def drift_ppm(self) -> float:
        """Least-squares slope of the stamp error against time, in parts per million."""
        if len(self._drift_t) < 8:
            return 0.0
        t = np.asarray(self._drift_t)
        e = np.asarray(self._drift_e)
        t = t - t.mean()
        denom = float(np.dot(t, t))
        return 0.0 if denom <= 0 else float(np.dot(t, e - e.mean()) / denom * 1e6)

    def reset(self) -> None:
        self._anchor_ns = None
        self._next = 0
        self._last_chunk_ns = None
        self._valid[:] = False
        self._drift_t.clear()
        self._drift_e.clear()
        self._corrected_s = 0.0  # samples inserted (gap fill) minus trimmed (overlaps), in s

    # --- writing --------------------------------------------------------------------------
    def _write(self, samples: np.ndarray, valid: np.ndarray) -> None:
        n = samples.shape[1]
        if n > self.capacity:  # only the newest part fits
            self._next += n - self.capacity
            samples, valid, n = samples[:, -self.capacity:], valid[-self.capacity:], self.capacity
        start = self._next % self.capacity
        first = min(n, self.capacity - start)
        self._data[:, start:start + first] = samples[:, :first]
        self._valid[start:start + first] = valid[:first]
        if first < n:
            self._data[:, :n - first] = samples[:, first:]
            self._valid[:n - first] = valid[first:]
        self._next += n

    def push(self, samples: np.ndarray, stamp_ns: int) -> PushResult:
        """Append a chunk ``(n_channels, n)`` whose first sample is at ``stamp_ns``."""
        samples = np.asarray(samples)
        if samples.ndim != 2 or samples.shape[0] != self.n_channels:
            self.counts["drop_channel_mismatch"] += 1
            raise AudioInputError(
                f"audio chunk has shape {samples.shape}; expected ({self.n_channels}, n)")
        n = samples.shape[1]
        if n == 0:
            self.counts["drop_empty_chunk"] += 1
            return PushResult("empty", 0)
        samples = samples.astype(np.float32, copy=False)
        # Fast path: a float64 sum of float32 samples cannot overflow, so it is finite exactly
        # when every sample is (NaN/Inf propagate); only then is the per-sample check skipped.
        with np.errstate(invalid="ignore"):  # inf + -inf = NaN is the expected signal here
            total = samples.sum(dtype=np.float64)
        if np.isfinite(total):
            valid = np.ones(n, dtype=bool)
        else:
            valid = np.isfinite(samples).all(axis=0)
            if not valid.all():
                self.counts["nonfinite_samples"] += int((~valid).sum())
                samples = np.where(np.isfinite(samples), samples, 0.0).astype(np.float32)
        stamp_ns = int(stamp_ns)
        status = "ok"
        if self._anchor_ns is None:
            self._anchor_ns, self._next, status = stamp_ns, 0, "start"
        elif self._last_chunk_ns is not None and stamp_ns < self._last_chunk_ns:
            if self._last_chunk_ns - stamp_ns > self.reset_backwards_ns:
                self.counts["reset_backwards_jump"] += 1
                self.reset()
                self._anchor_ns, status = stamp_ns, "reset"
            else:
                self.counts["drop_backwards_stamp"] += 1
                return PushResult("backwards", 0, stamp_ns - self._last_chunk_ns)
        err = stamp_ns - self.time_of(self._next) if status == "ok" else 0
        if status == "ok":
            if abs(err) <= self.max_jitter_ns:
                # the error against the sample count as if nothing had been corrected, so
                # the fit is not a sawtooth once drift has triggered gaps or overlaps
                self._drift_t.append(stamp_ns / NS_PER_S)
                self._drift_e.append(err / NS_PER_S + self._corrected_s)
                if len(self._drift_t) > 512:
                    del self._drift_t[0], self._drift_e[0]
            elif err > 0:
                gap = int(round(err * self.sample_rate / NS_PER_S))
                if gap <= self.max_gap_fill:
                    self.counts["gaps"] += 1
                    self.counts["gap_samples_filled"] += gap
                    self._write(np.zeros((self.n_channels, gap), np.float32),
                                np.zeros(gap, dtype=bool))
                    self._corrected_s += gap / self.sample_rate
                    status = "gap"
                else:
                    self.counts["discontinuities"] += 1
                    self.reset()
                    self._anchor_ns, status = stamp_ns, "discontinuity"
            else:
                overlap = int(round(-err * self.sample_rate / NS_PER_S))
                if overlap >= n:
                    self.counts["drop_duplicate_chunk"] += 1
                    self._last_chunk_ns = stamp_ns
                    return PushResult("duplicate", 0, err)
                self.counts["overlaps"] += 1
                self.counts["overlap_samples_trimmed"] += overlap
                samples, valid = samples[:, overlap:], valid[overlap:]
                self._corrected_s -= overlap / self.sample_rate
                status = "overlap"
        self._write(samples, valid)
        self._last_chunk_ns = stamp_ns
        self.counts["chunks"] += 1
        return PushResult(status, samples.shape[1], err)

    # --- reading --------------------------------------------------------------------------
    def window_at(self, start_ns: int, n_samples: int) -> tuple[AudioWindow, float] | None:
        """The ``n_samples`` starting at the sample nearest ``start_ns`` and the valid fraction.

        None when that span is not (yet, or any more) in the buffer.
        """
        if self._anchor_ns is None:
            return None
        k0 = self.index_of(start_ns)
        if k0 < self.oldest_index or k0 + n_samples > self._next:
            return None
        start = k0 % self.capacity
        if start + n_samples <= self.capacity:
            # The span does not wrap: a plain slice copy (a fancy-index gather is ~5x slower).
            # A copy, not a view: later pushes overwrite the ring while callers hold the window.
            data = self._data[:, start:start + n_samples].copy()
            valid = self._valid[start:start + n_samples]
        else:
            idx = np.arange(k0, k0 + n_samples) % self.capacity
            data, valid = self._data[:, idx], self._valid[idx]
        window = AudioWindow(data, self.time_of(k0), self.sample_rate)
        return window, (np.count_nonzero(valid) / n_samples if n_samples else float("nan"))

    def window_centered(self, center_ns: int, n_samples: int) -> tuple[AudioWindow, float] | None:
        half_ns = (n_samples * NS_PER_S) // (2 * self.sample_rate)
        return self.window_at(center_ns - half_ns, n_samples)

    def latest(self, n_samples: int) -> tuple[AudioWindow, float] | None:
        if self._anchor_ns is None or self._next - n_samples < self.oldest_index:
            return None
        return self.window_at(self.time_of(self._next - n_samples), n_samples)
