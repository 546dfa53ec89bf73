"""Microphone-array capture over PortAudio (pyaudio), free of ROS.

* Opens a multichannel input device by index or by name (exact match first, then substring).
* Delivers :class:`Chunk` s of interleaved S16LE or F32LE bytes, exactly as the device gave them.
* Stamps: the time of each chunk's first sample is ``anchor + round(k * 1e9 / rate)``, ``k`` being
  the index of that sample in the stream. The anchor is set once, from the first callback's
  ``input_buffer_adc_time`` mapped to the data clock (``clock_ns``, the system clock) -- or from the
  data clock minus the first buffer's duration when the host reports no ADC time. Callback wall
  time never stamps a chunk, so stamps are spaced by exactly one sample period per sample.
* Overruns: a ``paInputOverflow`` status flag (the host dropped input; the stream is re-anchored
  from the ADC time when the host provides one) and chunks dropped because the consumer stalled
  (the bounded queue between the PortAudio thread and the consumer is full: the sample counter
  keeps running, so the next chunk's stamp shows the gap exactly).

pyaudio is imported lazily; :func:`pyaudio_available` says whether it can be used.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
SAMPLE_FORMATS = {"S16LE": ("paInt16", 2), "F32LE": ("paFloat32", 4)}


def pyaudio_available() -> tuple[bool, str]:
    try:
        import pyaudio  # noqa: F401
    except Exception as exc:  # ImportError, or a broken libportaudio
        return False, f"pyaudio is not importable ({type(exc).__name__}: {exc}); pip install pyaudio (needs portaudio19-dev)"
    return True, ""


@dataclass(frozen=True)
class Chunk:
    data: bytes  # interleaved frames, sample_format
    stamp_ns: int  # time of the first sample, data clock
    first_sample: int  # index of the first sample in the stream (counts dropped samples too)
    n_frames: int
    epoch: int  # increments each time the stream is re-anchored after a host overflow


@dataclass
class CaptureConfig:
    device: str | int = ""  # index, name, or "" = PortAudio's default input
    channels: int = 4
    sample_rate: int = 16000
    sample_format: str = "S16LE"
    chunk_frames: int = 512
    queue_chunks: int = 64
    stamp_source: str = "adc"  # "adc": anchor at the first buffer's ADC time; "clock": at clock_ns()

    def validate(self) -> None:
        if self.sample_format not in SAMPLE_FORMATS:
            raise ValueError(f"sample_format must be one of {sorted(SAMPLE_FORMATS)}, got {self.sample_format!r}")
        if not 1 <= int(self.channels) <= 255:
            raise ValueError(f"channels must be in 1..255, got {self.channels}")
        if int(self.sample_rate) <= 0 or int(self.chunk_frames) <= 0 or int(self.queue_chunks) <= 0:
            raise ValueError("sample_rate, chunk_frames and queue_chunks must be positive")
        if self.stamp_source not in ("adc", "clock"):
            raise ValueError(f"stamp_source must be 'adc' or 'clock', got {self.stamp_source!r}")

    @property
    def bytes_per_frame(self) -> int:
        return SAMPLE_FORMATS[self.sample_format][1] * int(self.channels)


def list_input_devices(pa) -> list[dict[str, Any]]:
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            out.append(info)
    return out


def find_device(pa, device: str | int, channels: int) -> int:
    """PortAudio device index for an index, a name (exact, then substring) or "" (default)."""
    devices = list_input_devices(pa)
    if device == "" or device is None or isinstance(device, int) or (
            isinstance(device, str) and device.strip().isdigit()):
        try:
            info = pa.get_default_input_device_info() if device in ("", None) \
                else pa.get_device_info_by_index(int(device))
        except (IOError, OSError) as exc:  # no default input device / no such index
            raise ValueError(f"input device {device!r}: {exc}") from exc
        idx = int(info["index"])
        if int(info["maxInputChannels"]) < channels:
            raise ValueError(f"device {idx} ({info['name']}) has {info['maxInputChannels']} "
                             f"input channels, need {channels}")
        return idx
    exact = [d for d in devices if d["name"] == device]
    partial = [d for d in devices if str(device).lower() in str(d["name"]).lower()]
    for candidates in (exact, partial):
        usable = [d for d in candidates if int(d["maxInputChannels"]) >= channels]
        if usable:
            return int(usable[0]["index"])
    names = ", ".join(f"{d['index']}: {d['name']} ({d['maxInputChannels']} ch)" for d in devices)
    raise ValueError(f"no input device matching {device!r} with >= {channels} channels; "
                     f"available: {names or 'none'}")


class AudioCapture:
    """PortAudio callback stream -> bounded queue of stamped chunks.

    ``clock_ns`` is the data clock the stamps are expressed in (default ``time.time_ns``, the
    system clock that ROS time follows on a live robot; tests pass a fake one). It is read once
    to anchor the stream (and again only after a host overflow), never per chunk.
    """

    def __init__(self, config: CaptureConfig, clock_ns: Callable[[], int] = time.time_ns,
                 pa=None):
        config.validate()
        self.config = config
        self.clock_ns = clock_ns
        self._pa = pa
        self._own_pa = pa is None
        self._stream = None
        self._queue: queue.Queue[Chunk] = queue.Queue(maxsize=int(config.queue_chunks))
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.device_index: int | None = None
        self.device_name: str = ""
        # stamp state, touched only by the PortAudio thread
        self._anchor_ns: int | None = None
        self._anchor_sample = 0
        self._next_sample = 0
        self._epoch = 0
        self._adc_offset_s: float | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        import pyaudio

        if self._pa is None:
            self._pa = pyaudio.PyAudio()
        cfg = self.config
        try:
            self.device_index = find_device(self._pa, cfg.device, int(cfg.channels))
            self.device_name = str(self._pa.get_device_info_by_index(self.device_index)["name"])
            fmt = getattr(pyaudio, SAMPLE_FORMATS[cfg.sample_format][0])
            self._stream = self._pa.open(
                format=fmt, channels=int(cfg.channels), rate=int(cfg.sample_rate), input=True,
                input_device_index=self.device_index, frames_per_buffer=int(cfg.chunk_frames),
                stream_callback=self._callback, start=False)
            self._stream.start_stream()
        except (IOError, OSError, ValueError) as exc:  # e.g. PortAudio -9998 invalid channels
            self.stop()  # close what was opened, terminate our PyAudio
            raise ValueError(f"cannot capture {cfg.channels} ch {cfg.sample_format} @ "
                             f"{cfg.sample_rate} Hz from device {cfg.device!r}: {exc}") from exc
        log.info("capturing %d ch %s @ %d Hz from device %d (%s)", cfg.channels,
                 cfg.sample_format, cfg.sample_rate, self.device_index, self.device_name)

    def stop(self) -> None:
        """Stop and close the stream and terminate our PyAudio; host errors on the way (a
        device that is gone) are logged, never left to skip the rest of the cleanup."""
        steps = []
        if self._stream is not None:
            steps += [self._stream.stop_stream, self._stream.close]
            self._stream = None
        if self._own_pa and self._pa is not None:
            steps.append(self._pa.terminate)
            self._pa = None
        for step in steps:
            try:
                step()
            except (IOError, OSError) as exc:
                log.warning("audio capture cleanup (%s): %s", step.__name__, exc)

    def __enter__(self) -> "AudioCapture":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def active(self) -> bool:
        return self._stream is not None and self._stream.is_active()

    # --- consumer side --------------------------------------------------------------------
    def read(self, timeout_s: float | None = 1.0) -> Chunk | None:
        try:
            return self._queue.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def stats(self) -> dict[str, int]:
        with self._lock:
            d = dict(self.counts)
        d["queued_chunks"] = self._queue.qsize()
        return d

    # --- PortAudio thread -----------------------------------------------------------------
    def _stamp(self, n_frames: int, time_info: dict, reanchor: bool) -> int:
        rate = int(self.config.sample_rate)
        if self._anchor_ns is None or reanchor:
            now_ns = int(self.clock_ns())
            adc = float(time_info.get("input_buffer_adc_time", 0.0) or 0.0) if time_info else 0.0
            cur = float(time_info.get("current_time", 0.0) or 0.0) if time_info else 0.0
            if self.config.stamp_source == "adc" and adc > 0.0 and cur > 0.0 and cur >= adc:
                # the first sample was captured (cur - adc) seconds before "now", mapped once
                anchor = now_ns - int(round((cur - adc) * NS_PER_S))
            else:
                if reanchor:
                    # no ADC time: keep counting (the stamps cannot see how much the host lost)
                    anchor = None
                else:
                    anchor = now_ns - n_frames * NS_PER_S // rate
            if anchor is not None:
                self._anchor_ns = anchor
                self._anchor_sample = self._next_sample
                if reanchor:
                    self._epoch += 1
        k = self._next_sample - self._anchor_sample
        return self._anchor_ns + (k * NS_PER_S + rate // 2) // rate  # round(k * 1e9 / rate)

    def _callback(self, in_data, frame_count, time_info, status_flags):
        import pyaudio

        overflow = bool(status_flags & pyaudio.paInputOverflow)
        n = int(frame_count)
        if in_data is None or len(in_data) != n * self.config.bytes_per_frame:
            # frame_count frames passed anyway: keep the sample counter on time, so the
            # next chunk's stamp and first sample stay right and the gap is visible downstream
            self._next_sample += max(n, 0)
            with self._lock:
                self.counts["malformed_buffers"] += 1
                self.counts["dropped_frames"] += max(n, 0)
            return (None, pyaudio.paContinue)
        stamp = self._stamp(n, time_info, reanchor=overflow and self._anchor_ns is not None)
        chunk = Chunk(bytes(in_data), stamp, self._next_sample, n, self._epoch)
        self._next_sample += n
        try:
            self._queue.put_nowait(chunk)
            dropped = False
        except queue.Full:
            dropped = True
        with self._lock:
            self.counts["chunks"] += 1
            self.counts["frames"] += n
            if overflow:
                self.counts["overruns"] += 1
                self.counts["overruns.host_overflow"] += 1
            if dropped:
                self.counts["overruns"] += 1
                self.counts["overruns.consumer_stall"] += 1
                self.counts["dropped_frames"] += n
        return (None, pyaudio.paContinue)


class ChunkSequencer:
    """Consumer-side check of a chunk stream: counts sample-counter discontinuities."""

    def __init__(self):
        self.expected: int | None = None
        self.epoch = 0
        self.discontinuities = 0
        self.missing_frames = 0
        self.last_stamp_ns = 0  # data time of the newest chunk's first sample (0: none yet)

    def push(self, chunk: Chunk) -> bool:
        """Returns False when frames are missing before ``chunk``."""
        ok = True
        if self.expected is not None and chunk.epoch == self.epoch and chunk.first_sample != self.expected:
            self.discontinuities += 1
            self.missing_frames += chunk.first_sample - self.expected
            ok = False
        if chunk.epoch != self.epoch:
            self.discontinuities += 1
            ok = False
        self.epoch = chunk.epoch
        self.expected = chunk.first_sample + chunk.n_frames
        self.last_stamp_ns = chunk.stamp_ns
        return ok


# --------------------------------------------------------------------------------------------
# Messages (rosbags classes; the shells serialise them to CDR)
# --------------------------------------------------------------------------------------------
def chunk_msg(chunk: Chunk, frame_id: str) -> Any:
    """AudioDataStamped carrying the chunk's bytes untouched (a zero-copy numpy view)."""
    import numpy as np

    from ..bag import messages as m

    T = m.TYPESTORE.types
    data = np.frombuffer(chunk.data, dtype=np.uint8)
    return T[m.AUDIO_STAMPED](header=m.header(chunk.stamp_ns, frame_id),
                              audio=T[m.AUDIO_DATA](data=data))


def info_msg(config: CaptureConfig) -> Any:
    from ..bag import messages as m

    return m.audio_info_msg(int(config.channels), int(config.sample_rate), config.sample_format)


#: parameters of the capture node: name -> (default, description). config/capture.yaml sets them.
CAPTURE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "device": ("", "Input device: PortAudio index (e.g. '2') or name (exact, else substring, e.g. 'ReSpeaker'); '' = default input."),
    "channels": (4, "Number of interleaved channels to capture (the mic array's channel count)."),
    "sample_rate": (16000, "Sample rate in Hz."),
    "sample_format": ("S16LE", "S16LE or F32LE (interleaved, little-endian), published as is."),
    "chunk_frames": (512, "Frames per published AudioDataStamped chunk (PortAudio buffer size)."),
    "queue_chunks": (64, "Chunks buffered between the PortAudio thread and the publisher; when full, chunks are dropped and counted as overruns."),
    "stamp_source": ("adc", "adc: anchor the sample counter at the first buffer's ADC time; clock: at the node clock when the first buffer arrives."),
    "frame_id": ("mic_array", "frame_id of the audio messages (the array frame)."),
    "diagnostics_period_s": (1.0, "Period of /diagnostics in seconds."),
}


def config_from_params(values: dict[str, Any]) -> CaptureConfig:
    """The capture configuration of the parameters; ValueError (naming the parameter) for a
    value of the wrong type or out of range."""
    ints = {}
    for name in ("channels", "sample_rate", "chunk_frames", "queue_chunks"):
        try:
            ints[name] = int(values[name])
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{name}: {values[name]!r} is not an integer") from None
    cfg = CaptureConfig(device=values.get("device", ""), **ints,
                        sample_format=str(values["sample_format"]).upper(),
                        stamp_source=str(values["stamp_source"]))
    cfg.validate()
    return cfg


def capture_diagnostics(node_name: str, capture: AudioCapture, seq: ChunkSequencer,
                        published: int) -> Any:
    """DiagnosticArray for the capture node: counts, overruns, discontinuities. Stamped with
    the data time of the newest chunk (not a wall clock read at publish time)."""
    from ..bag import messages as m
    from .diagnostics import DIAGNOSTIC_ARRAY, DIAGNOSTIC_STATUS, ERROR, KEY_VALUE, OK, WARN

    stats = capture.stats()
    stats["published_chunks"] = published
    stats["discontinuities"] = seq.discontinuities
    stats["missing_frames"] = seq.missing_frames
    if not capture.active:  # PortAudio stopped the stream: device gone or a host error
        level, message = ERROR, "audio stream stopped (device disconnected?)"
    elif stats.get("overruns", 0):
        level, message = WARN, f"{stats['overruns']} overruns"
    else:
        level, message = OK, "ok"
    status = m.new_msg(
        DIAGNOSTIC_STATUS, level=level, name=f"{node_name}: capture", message=message,
        hardware_id=f"{capture.device_index}: {capture.device_name}",
        values=[m.new_msg(KEY_VALUE, key=str(k), value=str(v)) for k, v in sorted(stats.items())])
    return m.new_msg(DIAGNOSTIC_ARRAY, header=m.header(seq.last_stamp_ns, ""), status=[status])
