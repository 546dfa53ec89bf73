"""Parameters: one table of names, defaults and descriptions, read by the live node (which
declares each with its description), the replay tool and the benchmarks.

The YAML file is in the ROS 2 format (``/**: ros__parameters: ...``); nested mappings are
flattened with dots exactly as rclpy does (``doa: {method: srp_phat}`` -> ``doa.method``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ParamSpec:
    """A parameter: its default (whose type is the parameter's type), what it does, and the
    values it may take (``low <= value <= high``; one of ``choices``)."""

    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None


PARAMETERS: dict[str, ParamSpec] = {
    # --- microphone array ---
    "mic_array_preset": ParamSpec("respeaker_usb_4mic_v2", "Named array layout (see geometry.PRESETS); ignored when mic_positions is set."),
    "mic_positions": ParamSpec([0.0], "Flat list x0,y0,z0,x1,... of mic positions in metres in the array frame; [0.0] = use the preset."),
    "sample_rate": ParamSpec(0, "Expected audio sample rate in Hz; 0 = take it from AudioInfo. When set, AudioInfo must agree or audio is dropped and counted.", 0, 384000),
    "array_frame": ParamSpec("mic_array", "TF frame of the microphone array (REP-103 axes)."),
    "camera_frame": ParamSpec("camera_optical_frame", "TF frame of the camera's optical centre (z forward, x right, y down)."),
    "speed_of_sound": ParamSpec(343.0, "Speed of sound in m/s.", 300.0, 400.0),
    # --- audio front end ---
    "audio.buffer_s": ParamSpec(10.0, "Length of the timestamped ring buffer in seconds.", 1.0, 120.0),
    "audio.max_jitter_s": ParamSpec(0.002, "Stamp error tolerated before a chunk counts as a gap or overlap (at least 1 us: stamps are rounded to the nanosecond).", 1e-6, 0.1),
    "audio.max_gap_fill_s": ParamSpec(0.5, "Gaps up to this long are zero-filled and masked; longer ones restart the stream.", 0.0, 5.0),
    "audio.min_valid_fraction": ParamSpec(0.9, "Windows with less valid (non-gap, finite) audio are dropped and counted.", 0.0, 1.0),
    "audio.max_image_wait_s": ParamSpec(1.0, "Images whose audio has not arrived after this much audio time are dropped.", 0.0, 10.0),
    "audio.window_s": ParamSpec(0.256, "Audio window per DoA estimate in seconds; it ends audio.lookahead_s after the stamp it describes.", 0.016, 2.0),
    "audio.lookahead_s": ParamSpec(0.192, "Audio after the stamp that each window includes (fixed-lag estimation: the estimate stamped t uses audio up to t + this, so outputs come this much later); 0 = causal, lowest latency. At most audio.window_s.", 0.0, 2.0),
    "audio.nfft": ParamSpec(512, "STFT length in samples.", 32, 8192),
    "audio.hop": ParamSpec(256, "STFT hop in samples.", 1, 8192),
    # --- DoA ---
    "doa.method": ParamSpec("music", "music (diffuse-whitened broadband MUSIC; several talkers) or srp_phat (SRP-PHAT; one talker).", choices=("music", "srp_phat")),
    "doa.smoothing_s": ParamSpec(0.15, "Time constant of the recursive smoothing of DoA statistics over windows; 0 = memoryless.", 0.0, 10.0),
    "doa.map_smoothing_s": ParamSpec(0.3, "Time constant of the published DoA map and peaks (average of the per-window maps). The tracker reads each window's own peaks; a longer value keeps static talkers on the published map between words and lags walking ones. 0 = publish each window's map.", 0.0, 10.0),
    "doa.rate_hz": ParamSpec(10.0, "DoA rate when no camera drives the pipeline.", 0.5, 200.0),
    "doa.azimuth_resolution_deg": ParamSpec(2.0, "Azimuth grid step in degrees.", 0.25, 45.0),
    "doa.elevation_resolution_deg": ParamSpec(10.0, "Elevation grid step in degrees (full-sphere mode).", 0.25, 45.0),
    "doa.azimuth_only": ParamSpec(True, "Search azimuth only, on one ring at doa.azimuth_only_elevation_deg; planar arrays cannot tell up from down."),
    "doa.azimuth_only_elevation_deg": ParamSpec(30.0, "Elevation of the azimuth-only search ring: talkers' mouths and the floor/ceiling reflections reach a table- or robot-height planar array from above the horizon, which shrinks its in-plane delays by cos(elevation). Peaks report this elevation (not estimated).", -85.0, 85.0),
    "doa.min_elevation_deg": ParamSpec(-20.0, "Lowest elevation searched (full-sphere mode); at most 85 deg from the horizon, since a grid row at +-90 deg is one direction repeated.", -85.0, 85.0),
    "doa.max_elevation_deg": ParamSpec(80.0, "Highest elevation searched (full-sphere mode); at most 85 deg from the horizon, since a grid row at +-90 deg is one direction repeated.", -85.0, 85.0),
    "doa.freq_min_hz": ParamSpec(300.0, "Lowest frequency used by the DoA estimators.", 0.0, 96000.0),
    "doa.freq_max_hz": ParamSpec(7500.0, "Highest frequency used by the DoA estimators.", 1.0, 96000.0),
    "doa.max_sources": ParamSpec(3, "Maximum number of DoA peaks per frame.", 1, 8),
    "doa.min_peak_separation_deg": ParamSpec(25.0, "Peaks closer than this are merged.", 0.0, 180.0),
    "doa.min_peak_confidence": ParamSpec(0.15, "Peaks below this relative height are discarded.", 0.0, 1.0),
    # --- voice activity ---
    "vad.method": ParamSpec("energy", "energy (adaptive noise floor) or silero (needs torch).", choices=("energy", "silero")),
    "vad.threshold": ParamSpec(0.15, "Voice probability above which a frame is voice-active.", 0.0, 1.0),
    # --- tracker ---
    "tracker.gate_deg": ParamSpec(25.0, "Association gate (great-circle degrees).", 1.0, 180.0),
    "tracker.birth_hits": ParamSpec(3, "Hits within birth_window needed to confirm a track.", 1, 100),
    "tracker.birth_window": ParamSpec(8, "Frames over which birth_hits are counted.", 1, 100),
    "tracker.silence_keep_s": ParamSpec(10.0, "A confirmed track survives this long without detections.", 0.0, 3600.0),
    "tracker.speaking_hold_s": ParamSpec(0.1, "A track counts as speaking this long after its last detection.", 0.0, 10.0),
    "tracker.process_noise_deg_s2": ParamSpec(10.0, "Angular acceleration noise (deg/s^2) of the constant-velocity model.", 0.0, 1000.0),
    "tracker.measurement_noise_deg": ParamSpec(5.0, "DoA measurement standard deviation in degrees.", 0.1, 90.0),
    "tracker.secondary_min_confidence": ParamSpec(0.9, "The tracker takes the DoA peak that is loudest in the current window, and other peaks only when both their map height and their loudness relative to it reach this (reverberant side peaks outnumber real second talkers).", 0.0, 1.0),
    "tracker.birth_min_confidence": ParamSpec(0.8, "Minimum detection confidence to start or confirm a track.", 0.0, 1.0),
    "tracker.max_gate_deg": ParamSpec(37.5, "Cap on the association gate as a coasting track's uncertainty grows.", 1.0, 180.0),
    "tracker.coast_velocity_tau_s": ParamSpec(0.5, "Velocity decay time constant while a track is silent.", 0.0, 60.0),
    "tracker.accel_3d_m_s2": ParamSpec(0.5, "Acceleration noise of the 3-D constant-velocity filter (m/s^2).", 0.0, 100.0),
    # --- audio-visual heatmap ---
    "heatmap.enabled": ParamSpec(True, "Run the audio-visual heatmap network on camera frames."),
    "heatmap.model_dir": ParamSpec("", "Folder with image_encoder.onnx / audio_encoder.onnx; empty = shipped models/."),
    "heatmap.backend": ParamSpec("auto", "auto, onnxruntime or tensorrt.", choices=("auto", "onnxruntime", "tensorrt")),
    "heatmap.audio_rate_hz": ParamSpec(5.0, "Rate at which the audio embedding is recomputed (cached between).", 0.1, 100.0),
    "heatmap.fusion_range_m": ParamSpec(2.0, "Assumed talker range when projecting the DoA likelihood into the image.", 0.1, 100.0),
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


#: the live localizer node's own parameters. They may sit in the one params file next to the
#: algorithm's (the replay reads and ignores them); the node checks them with coerce_params.
NODE_PARAMETERS: dict[str, ParamSpec] = {
    "publish_overlay": ParamSpec(True, "Publish av_localization/overlay (bgr8); costs a frame copy and drawing."),
    "diagnostics_period_s": ParamSpec(1.0, "Period of /diagnostics in seconds.", 0.01, 3600.0),
    "publish_voices": ParamSpec(True, "Publish REP-155 /humans/voices/tracked and voice_<id> TF frames (needs hri_msgs)."),
}


def defaults() -> dict[str, Any]:
    return {name: spec.default for name, spec in PARAMETERS.items()}


def _coerce(name: str, spec: ParamSpec, v: Any) -> Any:
    """``v`` cast to the type of the default, or a ValueError saying what is wrong."""
    default = spec.default
    try:
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise TypeError
        elif isinstance(default, float):
            if isinstance(v, bool):
                raise TypeError
            v = float(v)
        elif isinstance(default, int):
            if isinstance(v, bool) or int(v) != v:
                raise TypeError
            v = int(v)
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise TypeError
        elif isinstance(default, list):
            if not isinstance(v, (list, tuple)):  # a string would be read char by char
                raise TypeError
            v = [float(x) for x in v]
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}: {v!r} is not of type {type(default).__name__}") from None
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{name}: {v!r} is not finite")
    if spec.low is not None and not spec.low <= v <= spec.high:
        raise ValueError(f"{name}: {v!r} is outside [{spec.low}, {spec.high}]")
    if spec.choices is not None and v not in spec.choices:
        raise ValueError(f"{name}: {v!r} is not one of {', '.join(spec.choices)}")
    return v


def coerce_params(values: dict[str, Any],
                  table: dict[str, ParamSpec] = PARAMETERS) -> dict[str, Any]:
    """The parameters cast to their defaults' types (YAML ``343`` for a float, ...) and checked
    against their ranges and choices; a ValueError lists every unusable one (with what it
    does), so a typo in a params file stops the node at start rather than hanging it (e.g. a
    DoA rate of 1e9) or failing later. Missing names take their defaults; unknown names are
    kept (the node shells add their own). ``table``: which parameters (default: the
    algorithm's; ``NODE_PARAMETERS`` for the node's own)."""
    out = dict(values)
    problems = []
    for name, spec in table.items():
        try:
            out[name] = _coerce(name, spec, out.get(name, spec.default))
        except ValueError as exc:
            problems.append(f"{exc} ({spec.description})")
    if problems:
        raise ValueError("unusable parameters:\n  " + "\n  ".join(problems))
    return out


def load_params(path: str | Path | None = None, node_name: str | None = None) -> dict[str, Any]:
    """Defaults overlaid with a ROS 2 params YAML (``/**`` section, then ``node_name``'s),
    checked by :func:`coerce_params`."""
    params = defaults()
    if path is None:
        return params
    with open(path) as f:
        doc = yaml.safe_load(f) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: a params file maps node names to ros__parameters, got a "
                         f"{type(doc).__name__}")
    sections = [doc.get("/**", {})]
    if node_name:
        sections.append(doc.get(node_name, {}))
    for section in sections:
        tree = (section or {}).get("ros__parameters", {}) if isinstance(section, dict) else None
        if not isinstance(tree, dict):
            raise ValueError(f"{path}: ros__parameters must be a mapping")
        values = flatten(tree)
        unknown = sorted(set(values) - set(PARAMETERS) - set(NODE_PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}")
        # the node shells' own parameters share the file; the algorithm does not read them
        params.update({k: v for k, v in values.items() if k in PARAMETERS})
    return coerce_params(params)


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
