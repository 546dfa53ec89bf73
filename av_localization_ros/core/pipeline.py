"""The one processing chain: audio window (+ optional image) -> every output.

    window --VAD--> voice probability
           --DoaEstimator--> DoA map + top-K peaks of this window
                  --SpeakerTracker--> tracks (fed the peaks only while voice is active)
                  --average over doa.map_smoothing_s--> published DoA map + its peaks
                                                        (ranked with the tracks' support)
    image  --HeatmapRunner--> audio-visual heatmap --fusion with the projected DoA map-->

Channels that carry no signal (a dead or unplugged microphone, :mod:`.channels`) are left out
of the VAD and the DoA while they stay dead: the DoA runs on the live sub-array (one
estimator per set of live channels, built on first use), and the dead channels are counted in
``dead_channel_windows`` and named in ``dead_channels``. Fewer than two live channels: the
window is dropped (``InputError`` ``dead_channels``).

Outputs are stamped from the data: the image stamp when an image drives the step, otherwise
the audio sample time ``audio.lookahead_s`` before the window's end. A window ends
``audio.lookahead_s`` after the stamp it describes (fixed-lag estimation; 0 = causal, lowest
latency): the window's centre, the DoA smoothing and the tracker's hold all lag the audio, and
the lookahead puts the estimate back on the time it describes, at the price of that much more
latency. Replay, benchmarks and the ROS nodes call this unchanged.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

import cv2
import numpy as np

from .camera import CameraGeometry
from .channels import DEAD_DB, ChannelHealth
from .doa import MAX_GAP_S, DoaEstimator, find_peaks
from .fusion import DoaImageProjector, fuse, working_shape
from .geometry import MicArray
from .stft import n_frames, window_spectra
from .tracker import SpeakerTracker
from .types import (NS_PER_S, AudioWindow, Detection, DoaFrame, DoaPeak, ImageFrame,
                    PipelineOutput, TrackState, angular_distance_scalar)
from .vad import make_vad

log = logging.getLogger(__name__)

SILENT_TRACK_SUPPORT = 0.5  # support of a peak near a confirmed track that is not speaking now


def rank_by_track_support(peaks: Sequence[DoaPeak], tracks: Sequence[TrackState],
                          max_distance: float) -> list[DoaPeak]:
    """Peaks with confidence ``(h + s) / 2``, most confident first. ``h`` is the peak's
    relative height on the map; ``s`` its support by the tracks within ``max_distance`` rad
    (great circle): 1 for a speaking track, ``SILENT_TRACK_SUPPORT`` for a confirmed track
    that is silent now, 0 where there is none.

    Why: the published map is averaged over ``doa.map_smoothing_s``, so with two talkers at
    once its second-highest peak is often a reflection rather than the second talker (whose
    direction the tracker has confirmed), and right after a turn change its highest peak is
    still the previous talker (whose track has stopped speaking). On the tuning scenes, top-N
    ACC@10 (measured on the horizontal ring): two static talkers 0.744 (map height alone) ->
    0.778 (any confirmed track, s = 1) -> 0.803 (s = 1 / 0.5 / 0); three walking talkers 0.768
    -> 0.770 -> 0.810; one talker 0.988 -> 0.992. Published peaks only: the tracker reads each
    window's own peaks, so there is no feedback loop.
    """
    ranked = []
    for p in peaks:
        support = max((1.0 if t.speaking else SILENT_TRACK_SUPPORT for t in tracks
                       if angular_distance_scalar(p.azimuth, p.elevation, t.azimuth, t.elevation)
                       <= max_distance), default=0.0)
        ranked.append(DoaPeak(p.azimuth, p.elevation, 0.5 * (p.confidence + support)))
    return sorted(ranked, key=lambda q: -q.confidence)


class InputError(ValueError):
    """An input the pipeline cannot process (the caller drops it and counts the reason)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Pipeline:
    def __init__(self, params: dict[str, Any], sample_rate: int,
                 camera: CameraGeometry | None = None, heatmap_runner=None):
        self.params = dict(params)
        self.sample_rate = int(sample_rate)
        self.mic_array = MicArray.from_params(self.params)
        # The estimator sizes its STFT/bands from the rate it is given.
        self.params["sample_rate"] = self.sample_rate
        self.doa = DoaEstimator(self.mic_array, self.params)  # the one in use (live channels)
        self._estimators: dict[tuple[int, ...], DoaEstimator] = {(): self.doa}  # by dead set
        self.channel_health = ChannelHealth(self.mic_array.n_mics)
        self.dead_channel_windows = 0
        self.vad = make_vad(self.params)
        self.vad_threshold = float(self.params["vad.threshold"])
        self.secondary_min_confidence = float(self.params["tracker.secondary_min_confidence"])
        self.map_smoothing_s = float(self.params["doa.map_smoothing_s"])
        if not self.map_smoothing_s >= 0.0:
            raise ValueError(f"doa.map_smoothing_s must be >= 0, got {self.map_smoothing_s}")
        self._map: np.ndarray | None = None  # published (averaged) DoA map
        self._map_stamp_ns: int | None = None
        self.tracker = SpeakerTracker(self.params)
        self.heatmap_runner = heatmap_runner
        self.window_samples = int(round(float(self.params["audio.window_s"]) * self.sample_rate))
        if n_frames(self.window_samples, self.doa.nfft, self.doa.hop) < 2:
            raise ValueError(f"audio.window_s {self.params['audio.window_s']} s is "
                             f"{self.window_samples} samples at {self.sample_rate} Hz: fewer "
                             f"than the 2 STFT frames (audio.nfft {self.doa.nfft}, audio.hop "
                             f"{self.doa.hop}) a DoA estimate needs")
        lookahead_s = float(self.params["audio.lookahead_s"])
        if not 0.0 <= lookahead_s <= float(self.params["audio.window_s"]):
            raise ValueError(f"audio.lookahead_s must lie in [0, audio.window_s], got {lookahead_s}")
        # a whole number of samples, so stamps stay sample-accurate
        self.lookahead_samples = int(round(lookahead_s * self.sample_rate))
        self.lookahead_ns = self.lookahead_samples * NS_PER_S // self.sample_rate
        self._projector: DoaImageProjector | None = None
        self.set_camera(camera)

    @property
    def n_channels(self) -> int:
        return self.mic_array.n_mics

    def reset(self) -> None:
        """Forget every state that follows the audio clock (DoA smoothing, VAD noise floor,
        published map, tracks: IDs restart at 1), e.g. when the stamps jump back."""
        for est in self._estimators.values():
            est.reset()
        self.vad.reset()
        self.tracker.reset()
        self._map = None
        self._map_stamp_ns = None

    @property
    def dead_channels(self) -> tuple[int, ...]:
        """Indices of the microphones left out as dead (:mod:`.channels`)."""
        return self.channel_health.dead

    def set_camera(self, camera: CameraGeometry | None) -> None:
        self.camera = camera
        self._projector = None if camera is None else DoaImageProjector(
            camera, self.doa.grid.azimuths, self.doa.grid.elevations,
            range_m=float(self.params["heatmap.fusion_range_m"]))

    def validate(self, window: AudioWindow) -> None:
        if window.n_channels != self.n_channels:
            raise InputError("channel_mismatch",
                             f"audio has {window.n_channels} channels but the mic array "
                             f"'{self.mic_array.name}' has {self.n_channels}")
        if window.sample_rate != self.sample_rate:
            raise InputError("sample_rate_mismatch",
                             f"audio is {window.sample_rate} Hz, pipeline runs at {self.sample_rate} Hz")
        if window.n_samples == 0:
            raise InputError("empty_audio", "zero-length audio window")
        if not np.all(np.isfinite(window.samples)):
            raise InputError("nonfinite_audio", "audio window contains NaN or Inf")

    def process(self, window: AudioWindow, image: ImageFrame | None = None,
                av_window: AudioWindow | None = None) -> PipelineOutput:
        """Run every stage on one window; ``av_window`` feeds the heatmap's audio encoder."""
        self.validate(window)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        spectra = window_spectra(window, self.doa.nfft, self.doa.hop)  # one STFT, shared
        window, spectra = self._live_channels(window, spectra)
        voice_p = float(self.vad.probability(window, spectra))
        voice = voice_p >= self.vad_threshold
        t1 = time.perf_counter()
        stamp = image.stamp_ns if image is not None else window.end_stamp_ns - self.lookahead_ns
        window_map, window_peaks = self.doa.estimate(window, spectra)
        t2 = time.perf_counter()
        detections = self._detections(window_peaks) if voice else []
        t3 = time.perf_counter()
        tracks = self.tracker.update(stamp, detections, voice_active=voice)
        t4 = time.perf_counter()
        doa_map, peaks = self._published_map(window_map, window_peaks, stamp, tracks)
        t5 = time.perf_counter()
        timings.update(vad=t1 - t0, doa=(t2 - t1) + (t5 - t4), detections=t3 - t2,
                       tracker=t4 - t3)
        doa = DoaFrame(stamp_ns=stamp, doa_map=doa_map, azimuths=self.doa.grid.azimuths,
                       elevations=self.doa.grid.elevations, peaks=tuple(peaks),
                       voice_probability=voice_p, voice_active=voice)
        out = PipelineOutput(stamp_ns=stamp, doa=doa, tracks=tuple(tracks), timings_s=timings,
                             image=image)
        if image is not None:
            self._image_stage(out, image, av_window)
        return out

    def _live_channels(self, window: AudioWindow,
                       spectra: np.ndarray) -> tuple[AudioWindow, np.ndarray]:
        """The window and spectra restricted to the live channels; switches ``self.doa`` to
        the live sub-array's estimator when the set of dead channels changes."""
        before = self.channel_health.dead
        dead = self.channel_health.update(spectra)
        if not dead and not before:
            return window, spectra  # every step but a dead microphone's
        if dead != before:
            if dead:
                log.warning("microphone(s) %s carry no signal (> %.0f dB below the others): "
                            "left out of the DoA", list(dead), DEAD_DB)
            else:
                log.info("all microphones carry signal again")
            if len(dead) <= self.n_channels - 2:
                self.doa = self._estimator_without(dead)
                self.doa.reset()
        if not dead:
            return window, spectra
        self.dead_channel_windows += 1
        if len(dead) > self.n_channels - 2:
            raise InputError("dead_channels", f"only {self.n_channels - len(dead)} of "
                             f"{self.n_channels} microphones carry signal")
        keep = np.flatnonzero(self.channel_health.live)
        return AudioWindow(window.samples[keep], window.stamp_ns, window.sample_rate), spectra[keep]

    def _estimator_without(self, dead: tuple[int, ...]) -> DoaEstimator:
        est = self._estimators.get(dead)
        if est is None:
            keep = [i for i in range(self.n_channels) if i not in dead]
            sub = MicArray(self.mic_array.positions[keep],
                           name=f"{self.mic_array.name} without mics {list(dead)}")
            est = self._estimators[dead] = DoaEstimator(sub, self.params)
        return est

    def _published_map(self, window_map: np.ndarray, window_peaks, stamp_ns: int,
                       tracks: Sequence[TrackState]):
        """The DoA map and peaks to publish: the exponential average of the per-window maps
        with time constant ``doa.map_smoothing_s`` in data time, ``M_t = a M_prev + (1 - a)
        map_t``, ``a = exp(-dt / tau)``, and its peaks (same peak settings), ranked by
        :func:`rank_by_track_support`.

        Why two time scales: the tracker must follow turn changes and walking talkers, so it
        reads each window's peaks; what is published (and fused into the image) is better
        steady, so a talker stays on the map between words while another one talks (top-N
        ACC@10 on the tuning scenes, horizontal ring, 0 -> 0.3 s: two static talkers 0.756 ->
        0.803, walking talkers 0.844 -> 0.810). A step back in time or a gap over
        ``doa.MAX_GAP_S`` (the same rule as the DoA smoothing) restarts the average; 0 = no
        average.
        """
        tau = self.map_smoothing_s
        if tau <= 0.0:
            return window_map, rank_by_track_support(window_peaks, tracks, self.tracker.gate)
        last = self._map_stamp_ns
        self._map_stamp_ns = stamp_ns
        dt = None if last is None else (stamp_ns - last) / NS_PER_S
        if dt is None or not 0.0 < dt <= MAX_GAP_S or self._map is None:
            self._map = window_map
        else:
            a = np.float32(np.exp(-dt / tau))
            self._map = a * self._map + (np.float32(1.0) - a) * window_map
        d = self.doa
        peaks = find_peaks(self._map, d.grid, d.max_sources, d.min_separation, d.min_rel_height)
        return self._map, rank_by_track_support(peaks, tracks, self.tracker.gate)

    def _detections(self, peaks) -> list[Detection]:
        """What the tracker sees: the peak that is loudest in this window (the map is smoothed,
        so right after a turn change the previous talker's peak may still be the highest), and
        further peaks only when nearly as high on the map and nearly as loud now (reverberant
        side peaks outnumber real second talkers). Confidence: loudness relative to the
        loudest peak."""
        if len(peaks) <= 1:  # nothing to rank
            return [Detection(p.azimuth, p.elevation, 1.0) for p in peaks]
        activity = self.doa.peak_activity(peaks)
        loudest = max(activity)
        if not loudest > 0.0:
            return [Detection(peaks[0].azimuth, peaks[0].elevation, peaks[0].confidence)]
        order = sorted(range(len(peaks)), key=lambda i: -activity[i])
        s = self.secondary_min_confidence
        return [Detection(peaks[i].azimuth, peaks[i].elevation, activity[i] / loudest)
                for k, i in enumerate(order)
                if k == 0 or (peaks[i].confidence >= s and activity[i] >= s * loudest)]

    def _image_stage(self, out: PipelineOutput, image: ImageFrame,
                     av_window: AudioWindow | None) -> None:
        t0 = time.perf_counter()
        heatmap = None
        if self.heatmap_runner is not None:
            if av_window is not None and av_window.n_samples > 0:
                self.heatmap_runner.set_audio(av_window)
            # at the working resolution, the size the fusion and the published topic use (the
            # network's map is coarser still, so nothing is lost)
            img_h, img_w = image.image.shape[:2]
            heatmap, out.av_confidence = self.heatmap_runner.infer(
                image.image, out_shape=working_shape(img_w, img_h))
            out.heatmap = heatmap
        t1 = time.perf_counter()
        out.timings_s["heatmap"] = t1 - t0
        if self._projector is not None:
            likelihood = self._projector.likelihood(out.doa.doa_map)
            if heatmap is not None and heatmap.shape != likelihood.shape:  # image != camera size
                heatmap = cv2.resize(heatmap, likelihood.shape[::-1], interpolation=cv2.INTER_AREA)
            if not out.doa.voice_active:
                likelihood = np.zeros_like(likelihood)
            out.fused_heatmap = fuse(heatmap, likelihood)
            out.timings_s["fusion"] = time.perf_counter() - t1
