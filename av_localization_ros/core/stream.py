"""Streaming front end shared by the live nodes and the replay tool.

It owns the timestamped ring buffer and decides when the Pipeline runs:

* camera-driven: each image waits until the audio window ending ``audio.lookahead_s`` after
  its stamp has arrived, then runs with that window (output stamp = image stamp);
* audio-only: while no image has arrived for ``2 / doa.rate_hz`` of audio time (whatever the
  images' own stamps: a camera with more latency than the lookahead still drives), a step runs
  every ``1 / doa.rate_hz`` of *audio sample time* (output stamp = window end - lookahead).

Output stamps strictly increase: an image stamped at or before the previous image (a frozen
camera re-sending a frame, a frame from the past) or the previous output (a camera starting
behind the audio-only steps) is dropped and counted; only new frames keep a camera "live". Audio stamps jumping back by more than the ring buffer's reset threshold
(a looping bag, a restarted driver) restart the stream: the buffer, the image queue and every
stateful stage of the pipeline (smoothing, VAD, tracker: IDs restart at 1).

Nothing here reads a wall clock for stamps; bad input is dropped and counted by reason in
``drops`` (plus the ring buffer's own counters), never raised to the caller. An AudioInfo that
cannot be used stops the stream it replaces: its audio is dropped
(``audio_after_unusable_info``) until a usable AudioInfo arrives, rather than decoded with the
previous layout.
"""
from __future__ import annotations

import logging
import time
from collections import Counter, deque
from typing import Any

import numpy as np

from . import kernels
from .audio_buffer import AudioInputError, AudioRingBuffer
from .camera import CameraGeometry
from .params import PARAMETERS
from .pipeline import InputError, Pipeline
from .types import NS_PER_S, ImageFrame, PipelineOutput

log = logging.getLogger(__name__)


class StreamingLocalizer:
    def __init__(self, params: dict[str, Any], heatmap_runner=None, max_image_queue: int = 64):
        self.params = dict(params)
        self.heatmap_runner = heatmap_runner
        self.drops: Counter = Counter()
        self.pipeline: Pipeline | None = None
        self.buffer: AudioRingBuffer | None = None
        self.audio_format: tuple[int, int, str] | None = None
        self.camera: CameraGeometry | None = None
        self._images: deque[ImageFrame] = deque(maxlen=max_image_queue)
        self._rate_period_ns = int(NS_PER_S / float(self.params["doa.rate_hz"]))
        self._next_tick_ns: int | None = None
        self._image_arrival_ns: int | None = None  # audio end when the last image arrived
        self._newest_image_ns: int | None = None  # newest image stamp checked against the audio
        self._last_output_ns: int | None = None
        self._info_rejected = False  # the latest AudioInfo could not be used
        self.latency_s: dict[str, list[float]] = {}
        self.outputs_total = 0
        self._warned: set[str] = set()
        # compile (first run on a machine: ~13 s) or load (~0.3 s) the kernels now, at start-up,
        # rather than when the first AudioInfo arrives and audio is already flowing
        kernels.warm_up()

    # --- configuration from the data ------------------------------------------------------
    def on_audio_info(self, channels: int, sample_rate: int, sample_format: str) -> bool:
        """Configure from AudioInfo; returns False (and counts) when it cannot be used."""
        fmt = (int(channels), int(sample_rate), str(sample_format))
        if fmt == self.audio_format:
            return True
        if fmt[0] < 1 or not 0 < fmt[1] <= PARAMETERS["sample_rate"].high:
            return self.reject_audio_info("bad_audio_info",
                                          f"AudioInfo says {fmt[0]} channels at {fmt[1]} Hz")
        expected_rate = int(self.params.get("sample_rate") or 0)
        if expected_rate and expected_rate != fmt[1]:
            return self.reject_audio_info(
                "sample_rate_mismatch", f"AudioInfo says {fmt[1]} Hz but sample_rate is "
                f"{expected_rate} Hz; set sample_rate: 0 to follow AudioInfo")
        try:
            pipeline = Pipeline(self.params, fmt[1], camera=self.camera,
                                heatmap_runner=self.heatmap_runner)
        except ValueError as exc:
            return self.reject_audio_info("bad_configuration", str(exc))
        if fmt[0] != pipeline.n_channels:
            return self.reject_audio_info(
                "channel_mismatch",
                f"AudioInfo says {fmt[0]} channels but the mic array has {pipeline.n_channels}")
        if self.audio_format is not None:
            self.drops["audio_format_change"] += 1
            log.warning("audio format changed %s -> %s; restarting the stream",
                        self.audio_format, fmt)
        self.audio_format = fmt
        self.pipeline = pipeline
        self.buffer = AudioRingBuffer(
            fmt[0], fmt[1], capacity_s=float(self.params["audio.buffer_s"]),
            max_jitter_s=float(self.params["audio.max_jitter_s"]),
            max_gap_fill_s=float(self.params["audio.max_gap_fill_s"]))
        self._info_rejected = False
        self._restart_timing()
        return True

    def reject_audio_info(self, reason: str, message: str) -> bool:
        """Count an AudioInfo that cannot be used and stop the stream it describes: the audio
        that follows has its layout, so decoding it with the previous one would be garbage.
        Returns False."""
        self._drop(reason, message)
        if self.audio_format is not None:
            log.warning("audio stream stopped until a usable AudioInfo arrives")
        self.audio_format = None
        self.pipeline = None
        self.buffer = None
        self._info_rejected = True
        self._restart_timing()
        return False

    def drop_audio_without_info(self) -> None:
        """Count a chunk that cannot be decoded: no AudioInfo yet, or the latest one unusable."""
        if self._info_rejected:
            self._drop("audio_after_unusable_info",
                       "the latest AudioInfo could not be used; dropping audio")
        else:
            self._drop("audio_before_info", "audio arrived before AudioInfo; dropping")

    def _restart_timing(self) -> None:
        """Forget the schedule, the queued images and the output clock (a new stream)."""
        self._next_tick_ns = None
        self._images.clear()
        self._image_arrival_ns = None
        self._newest_image_ns = None
        self._last_output_ns = None

    def on_camera(self, camera: CameraGeometry | None) -> None:
        self.camera = camera
        if self.pipeline is not None:
            self.pipeline.set_camera(camera)

    # --- data -----------------------------------------------------------------------------
    def on_audio(self, samples: np.ndarray, stamp_ns: int) -> list[PipelineOutput]:
        """Push a chunk ``(n_channels, n)``; returns the outputs that became computable."""
        if self.buffer is None:
            self.drop_audio_without_info()
            return []
        try:
            result = self.buffer.push(samples, stamp_ns)
        except AudioInputError as exc:
            self._drop("channel_mismatch", str(exc))
            return []
        if result.status == "reset":  # the audio clock went back: a new stream
            self._restart_timing()
            self.pipeline.reset()
        elif result.status == "discontinuity":  # forward jump: the tracker ages its tracks
            self._next_tick_ns = None
        return self._run_ready()

    def on_image(self, image: ImageFrame) -> list[PipelineOutput]:
        img = image.image
        if img is None or img.size == 0 or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            self._drop("bad_image", f"image must be (H, W, 3) uint8, got "
                                    f"{None if img is None else (img.shape, img.dtype)}")
            return []
        newest = max(self._images[-1].stamp_ns if self._images else -1,
                     -1 if self._newest_image_ns is None else self._newest_image_ns)
        if image.stamp_ns <= newest:  # a frozen camera re-sending a frame, or one from the past
            self._drop("image_stamp_not_increasing", "image stamp not after the previous one")
            return []
        if self.buffer is not None and self.buffer.started and self.pipeline is not None:
            # audio this far ahead would not arrive within the wait budget; queued, one bad
            # stamp (a camera clock jump) would hold back every later image until then
            ahead_ns = image.stamp_ns + self.pipeline.lookahead_ns - self.buffer.end_stamp_ns
            if ahead_ns > float(self.params["audio.max_image_wait_s"]) * NS_PER_S:
                self._drop("image_ahead_of_audio",
                           f"image stamp {ahead_ns / NS_PER_S:.2f} s ahead of the audio "
                           "(do the camera and the microphones share a clock?)")
                return []
        if self.buffer is not None and self.buffer.started:
            # a camera delivering new frames drives the pipeline: no audio-only ticks
            self._image_arrival_ns = self.buffer.end_stamp_ns
            self._newest_image_ns = image.stamp_ns
        if len(self._images) == self._images.maxlen:
            self._drop("image_queue_full", "no audio for queued images; dropping the oldest")
        self._images.append(image)
        return self._run_ready()

    # --- scheduling -----------------------------------------------------------------------
    def _run_ready(self) -> list[PipelineOutput]:
        if self.pipeline is None or self.buffer is None or not self.buffer.started:
            return []
        outputs: list[PipelineOutput] = []
        n = self.pipeline.window_samples
        win_ns = n * NS_PER_S // self.pipeline.sample_rate
        ahead_ns = self.pipeline.lookahead_ns  # windows end this long after their stamp
        end_ns = self.buffer.end_stamp_ns - ahead_ns  # newest stamp whose window is complete
        start_ns = self.buffer.start_stamp_ns
        max_wait_ns = int(float(self.params["audio.max_image_wait_s"]) * NS_PER_S)
        while self._images:
            image = self._images[0]
            if image.stamp_ns + ahead_ns - win_ns < start_ns:
                self._images.popleft()
                self._drop("image_older_than_audio", "image stamp precedes the buffered audio")
                continue
            if image.stamp_ns > end_ns:
                if image.stamp_ns - end_ns > max_wait_ns:
                    # queued before the audio started (on_image checks the others on arrival):
                    # waiting for its audio would hold back every later step
                    self._images.popleft()
                    self._drop("image_ahead_of_audio", "image queued before the audio started "
                               "is too far ahead of it")
                    continue
                break
            self._images.popleft()
            if self._last_output_ns is not None and image.stamp_ns <= self._last_output_ns:
                self._drop("image_not_after_previous_output",
                           "image stamp at or before the previous output (late or repeated "
                           "frame); outputs must not go back in time")
                continue
            if self._newest_image_ns is None or image.stamp_ns > self._newest_image_ns:
                self._newest_image_ns = image.stamp_ns  # queued before the audio started
            out = self._step(image.stamp_ns, image)
            if out is not None:
                outputs.append(out)
        # Audio-only ticks, suppressed while a camera drives the pipeline.
        camera_live = bool(self._images) or (
            self._image_arrival_ns is not None
            and self.buffer.end_stamp_ns - self._image_arrival_ns < 2 * self._rate_period_ns)
        if self._next_tick_ns is None:
            self._next_tick_ns = start_ns + win_ns - ahead_ns
        while self._next_tick_ns <= end_ns:
            tick = self._next_tick_ns
            self._next_tick_ns += self._rate_period_ns
            if not camera_live and (self._last_output_ns is None or tick > self._last_output_ns):
                out = self._step(tick, None)
                if out is not None:
                    outputs.append(out)
        return outputs

    def _step(self, stamp_ns: int, image: ImageFrame | None) -> PipelineOutput | None:
        """Run the pipeline on the window that ends ``audio.lookahead_s`` after ``stamp_ns``."""
        rate = self.pipeline.sample_rate
        n = self.pipeline.window_samples
        n_start = self.pipeline.lookahead_samples - n  # window start relative to the stamp
        got = self.buffer.window_at(stamp_ns + n_start * NS_PER_S // rate, n)
        if got is None:
            self._drop("audio_window_unavailable", "audio window not in buffer")
            return None
        window, valid = got
        if valid < float(self.params["audio.min_valid_fraction"]):
            self._drop("audio_window_invalid", f"only {valid:.0%} of the window is valid audio")
            return None
        av_window = None
        if image is not None and self.heatmap_runner is not None:
            n_av = int(round(self.heatmap_runner.audio_window_s * rate))
            # the heatmap network was trained on audio that ends at the image (no lookahead)
            got_av = self.buffer.window_at(stamp_ns - n_av * NS_PER_S // rate, n_av)
            if got_av is not None and got_av[1] >= float(self.params["audio.min_valid_fraction"]):
                av_window = got_av[0]
            else:  # not buffered yet (start, restart) or mostly gap: keep the last embedding
                self._drop("heatmap_audio_unavailable", "no complete audio window for the "
                           "heatmap network; the image runs with the previous audio embedding")
        t0 = time.perf_counter()
        try:
            out = self.pipeline.process(window, image=image, av_window=av_window)
        except InputError as exc:
            self._drop(exc.reason, str(exc))
            return None
        except ValueError as exc:  # e.g. a heatmap model rejecting the image
            self._drop("processing_error", str(exc))
            return None
        if image is not None:
            out.stamp_ns = image.stamp_ns
        out.timings_s["total"] = time.perf_counter() - t0
        for k, v in out.timings_s.items():
            hist = self.latency_s.setdefault(k, [])
            hist.append(v)
            if len(hist) > 1000:
                del hist[:500]
        self.outputs_total += 1
        self._last_output_ns = out.stamp_ns
        return out

    def _drop(self, reason: str, message: str) -> None:
        self.drops[reason] += 1
        if reason not in self._warned:  # log each reason once; the counters carry the rest
            self._warned.add(reason)
            log.warning("%s: %s", reason, message)

    @property
    def data_stamp_ns(self) -> int:
        """Newest data time seen (end of the buffered audio or the newest image checked against
        it; 0 before any data). Diagnostics are stamped with it, so they share the data's
        clock."""
        audio = self.buffer.end_stamp_ns if self.buffer is not None and self.buffer.started else 0
        return max(audio or 0, self._newest_image_ns or 0)

    def diagnostics(self) -> dict[str, Any]:
        d: dict[str, Any] = {f"drop.{k}": v for k, v in sorted(self.drops.items())}
        if self.buffer is not None:
            d.update({f"audio.{k}": v for k, v in sorted(self.buffer.counts.items())})
            d["audio.clock_drift_ppm"] = round(self.buffer.drift_ppm, 2)
        for k, v in self.latency_s.items():
            if v:
                d[f"latency_ms.{k}.p50"] = round(1e3 * float(np.percentile(v, 50)), 3)
                d[f"latency_ms.{k}.p99"] = round(1e3 * float(np.percentile(v, 99)), 3)
        if self.pipeline is not None:
            d.update({f"tracker.{k}": v for k, v in self.pipeline.tracker.diagnostics.items()})
            d["audio.dead_channels"] = ",".join(str(i) for i in self.pipeline.dead_channels)
            d["audio.dead_channel_windows"] = self.pipeline.dead_channel_windows
        d["outputs"] = self.outputs_total
        return d
