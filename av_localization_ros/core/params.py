"""Parameters: one table of names, defaults and descriptions, read by the live node (which
declares each with its description), the replay tool and the benchmarks.

The YAML file is in the ROS 2 format (``/**: ros__parameters: ...``); nested mappings are
flattened with dots exactly as rclpy does (``doa: {method: srp_phat}`` -> ``doa.method``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ParamSpec:
    default: Any
    description: str


PARAMETERS: dict[str, ParamSpec] = {
    # --- microphone array ---
    "mic_array_preset": ParamSpec("respeaker_usb_4mic_v2", "Named array layout (see geometry.PRESETS); ignored when mic_positions is set."),
    "mic_positions": ParamSpec([0.0], "Flat list x0,y0,z0,x1,... of mic positions in metres in the array frame; [0.0] = use the preset."),
    "sample_rate": ParamSpec(0, "Expected audio sample rate in Hz; 0 = take it from AudioInfo. When set, AudioInfo must agree or audio is dropped and counted."),
    "array_frame": ParamSpec("mic_array", "TF frame of the microphone array (REP-103 axes)."),
    "camera_frame": ParamSpec("camera_optical_frame", "TF frame of the camera's optical centre (z forward, x right, y down)."),
    "speed_of_sound": ParamSpec(343.0, "Speed of sound in m/s."),
    # --- audio front end ---
    "audio.buffer_s": ParamSpec(10.0, "Length of the timestamped ring buffer in seconds."),
    "audio.max_jitter_s": ParamSpec(0.002, "Stamp error tolerated before a chunk counts as a gap or overlap."),
    "audio.max_gap_fill_s": ParamSpec(0.5, "Gaps up to this long are zero-filled and masked; longer ones restart the stream."),
    "audio.min_valid_fraction": ParamSpec(0.9, "Windows with less valid (non-gap, finite) audio are dropped and counted."),
    "audio.max_image_wait_s": ParamSpec(1.0, "Images whose audio has not arrived after this much audio time are dropped."),
    "audio.window_s": ParamSpec(0.256, "Audio window per DoA estimate in seconds; it ends audio.lookahead_s after the stamp it describes."),
    "audio.lookahead_s": ParamSpec(0.192, "Audio after the stamp that each window includes (fixed-lag estimation: the estimate stamped t uses audio up to t + this, so outputs come this much later); 0 = causal, lowest latency. At most audio.window_s."),
    "audio.nfft": ParamSpec(512, "STFT length in samples."),
    "audio.hop": ParamSpec(256, "STFT hop in samples."),
    # --- DoA ---
    "doa.method": ParamSpec("music", "music (diffuse-whitened broadband MUSIC; several talkers) or srp_phat (fastest)."),
    "doa.smoothing_s": ParamSpec(0.15, "Time constant of the recursive smoothing of DoA statistics over windows; 0 = memoryless."),
    "doa.map_smoothing_s": ParamSpec(0.3, "Time constant of the published DoA map and peaks (average of the per-window maps). The tracker reads each window's own peaks; a longer value keeps static talkers on the published map between words and lags walking ones. 0 = publish each window's map."),
    "doa.rate_hz": ParamSpec(10.0, "DoA rate when no camera drives the pipeline."),
    "doa.azimuth_resolution_deg": ParamSpec(2.0, "Azimuth grid step in degrees."),
    "doa.elevation_resolution_deg": ParamSpec(10.0, "Elevation grid step in degrees (full-sphere mode)."),
    "doa.azimuth_only": ParamSpec(True, "Search azimuth only, on one ring at doa.azimuth_only_elevation_deg; planar arrays cannot tell up from down."),
    "doa.azimuth_only_elevation_deg": ParamSpec(30.0, "Elevation of the azimuth-only search ring: talkers' mouths and the floor/ceiling reflections reach a table- or robot-height planar array from above the horizon, which shrinks its in-plane delays by cos(elevation). Peaks report this elevation (not estimated)."),
    "doa.min_elevation_deg": ParamSpec(-20.0, "Lowest elevation searched (full-sphere mode)."),
    "doa.max_elevation_deg": ParamSpec(80.0, "Highest elevation searched (full-sphere mode)."),
    "doa.freq_min_hz": ParamSpec(300.0, "Lowest frequency used by the DoA estimators."),
    "doa.freq_max_hz": ParamSpec(7500.0, "Highest frequency used by the DoA estimators."),
    "doa.max_sources": ParamSpec(3, "Maximum number of DoA peaks per frame."),
    "doa.min_peak_separation_deg": ParamSpec(25.0, "Peaks closer than this are merged."),
    "doa.min_peak_confidence": ParamSpec(0.15, "Peaks below this relative height are discarded."),
    # --- voice activity ---
    "vad.method": ParamSpec("energy", "energy (adaptive noise floor) or silero (needs torch)."),
    "vad.threshold": ParamSpec(0.15, "Voice probability above which a frame is voice-active."),
    # --- tracker ---
    "tracker.gate_deg": ParamSpec(25.0, "Association gate (great-circle degrees)."),
    "tracker.birth_hits": ParamSpec(3, "Hits within birth_window needed to confirm a track."),
    "tracker.birth_window": ParamSpec(8, "Frames over which birth_hits are counted."),
    "tracker.silence_keep_s": ParamSpec(10.0, "A confirmed track survives this long without detections."),
    "tracker.speaking_hold_s": ParamSpec(0.1, "A track counts as speaking this long after its last detection."),
    "tracker.process_noise_deg_s2": ParamSpec(10.0, "Angular acceleration noise (deg/s^2) of the constant-velocity model."),
    "tracker.measurement_noise_deg": ParamSpec(5.0, "DoA measurement standard deviation in degrees."),
    "tracker.secondary_min_confidence": ParamSpec(0.9, "The tracker takes the DoA peak that is loudest in the current window, and other peaks only when both their map height and their loudness relative to it reach this (reverberant side peaks outnumber real second talkers)."),
    "tracker.birth_min_confidence": ParamSpec(0.8, "Minimum detection confidence to start or confirm a track."),
    "tracker.max_gate_deg": ParamSpec(37.5, "Cap on the association gate as a coasting track's uncertainty grows."),
    "tracker.coast_velocity_tau_s": ParamSpec(0.5, "Velocity decay time constant while a track is silent."),
    "tracker.accel_3d_m_s2": ParamSpec(0.5, "Acceleration noise of the 3-D constant-velocity filter (m/s^2)."),
    # --- audio-visual heatmap ---
    "heatmap.enabled": ParamSpec(True, "Run the audio-visual heatmap network on camera frames."),
    "heatmap.model_dir": ParamSpec("", "Folder with image_encoder.onnx / audio_encoder.onnx; empty = shipped models/."),
    "heatmap.backend": ParamSpec("auto", "auto, onnxruntime or tensorrt."),
    "heatmap.audio_rate_hz": ParamSpec(5.0, "Rate at which the audio embedding is recomputed (cached between)."),
    "heatmap.fusion_range_m": ParamSpec(2.0, "Assumed talker range when projecting the DoA likelihood into the image."),
}


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def defaults() -> dict[str, Any]:
    return {name: spec.default for name, spec in PARAMETERS.items()}


def load_params(path: str | Path | None = None, node_name: str | None = None) -> dict[str, Any]:
    """Defaults overlaid with a ROS 2 params YAML (``/**`` section, then ``node_name``'s)."""
    params = defaults()
    if path is None:
        return params
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    sections = [doc.get("/**", {})]
    if node_name:
        sections.append(doc.get(node_name, {}))
    for section in sections:
        values = flatten((section or {}).get("ros__parameters", {}))
        unknown = sorted(set(values) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"{path}: unknown parameters {unknown}")
        params.update(values)
    return params


def write_params(params: dict[str, Any], path: str | Path) -> None:
    """Write flat params as a nested ROS 2 params YAML."""
    tree: dict[str, Any] = {}
    for name, value in params.items():
        node = tree
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    with open(path, "w") as f:
        yaml.safe_dump({"/**": {"ros__parameters": tree}}, f, sort_keys=False)
