"""Scene simulator: a shoebox room, 0-3 talkers on piecewise-linear trajectories, a mic array
and a camera. ``simulate_scene(cfg)`` returns a ``SceneRecording`` (audio, images, ground truth).

Frames and time
    Talker waypoints are ``(t, x, y, z)`` in the array frame (REP-103: x forward, y left, z up;
    metres; t in seconds from the scene start). The array frame's axes are aligned with the
    room's axes; ``array_position`` is the array origin in room coordinates (corner at 0).
    Audio sample ``k`` is at ``start_ns + round(k * 1e9 / sample_rate)``; sound a talker emits
    at time t reaches a mic at ``t + distance / c`` (c = 343 m/s, as in core.geometry).

Room acoustics (hybrid image-source + stochastic late reverberation)
    The image-source order needed for the full decay comes from
    ``pra.inverse_sabine(rt60_s, room)``; the uniform wall absorption is the Eyring inverse
    (``eyring_absorption``), which is what an image-source model realises. The image-source
    model (pyroomacoustics ``ShoeBox``) is computed up to
    ``min(order, max_ism_order)`` (``max_ism_order_moving`` for moving talkers, which need many
    RIRs). Up to the time ``t_c = order / (c * sqrt(sum 1/L_i^2))`` every image source is
    present, so the ISM energy is exact; after it (when the order was capped) the RIR continues
    with a late tail: noise that is spatially coherent as a diffuse field across the array
    (sinc coherence, see ``diffuse_noise``) with an amplitude envelope decaying 60 dB per
    ``rt60_s``, scaled to the ISM energy just before ``t_c`` and cross-faded in over 20 ms. One
    tail realisation is drawn per talker, so a moving talker's RIRs differ only in their early
    part. pyroomacoustics' fractional-delay offset (``frac_delay_length // 2`` samples) is removed,
    so the direct path arrives exactly at ``distance / c``. ``rt60_s = 0`` gives free field.

Moving talkers
    RIRs are computed at anchor times every ``rir_step_s`` (shortened so that a talker moves at
    most ``rir_step_max_m`` between anchors). The dry signal is split with Hann windows of
    length 2 * step centred on the anchors (they sum to one), each piece is convolved with its
    anchor's early RIR, and the late tail is convolved once with the dry signal weighted by the
    interpolated tail gain.

Voices
    Each speech talker is one speaker of the speech library (``talker_voices``: distinct
    speakers drawn at random per scene, ``SpeechLibrary.voices``), so a talker keeps one voice
    through the scene and no talker index is tied to a voice across scenes (the renderer ties
    clothes colours to the talker index: a fixed voice-to-index mapping would let an
    audio-visual model pair voices with colours instead of sounds with mouths).

Noise and SNR
    ``diffuse_noise=True``: a spherically isotropic (diffuse) noise field, i.e. independent
    noise mixed per STFT bin so that the inter-mic coherence is sin(kd)/(kd), built from pink
    Gaussian noise or, with ``noise_recording`` (a file or a folder of files), from segments of
    a real recording; plus spatially white sensor noise ``sensor_noise_rel_db`` below it.
    ``diffuse_noise=False``: spatially white (independent per mic) white noise only.
    SNR = 10 log10(P_speech / P_noise) where P_speech is the power of the reverberant speech
    (all talkers) averaged over the mics and over the samples where at least one talker is
    active (ground-truth ``active``), and P_noise the noise power averaged over mics and time.

Ground truth
    At every image stamp and on a ``gt_rate_hz`` grid, merged and sorted. ``active`` = inside
    one of the talker's speaking intervals AND a frame-energy VAD on the talker's dry signal
    (frames within ``vad_threshold_db`` of the talker's speech level) with a 100 ms hangover.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
from scipy.signal import istft, oaconvolve, stft

from ..core.camera import R_BODY_OPTICAL, CameraGeometry
from ..core.geometry import SPEED_OF_SOUND_M_S, GeometryError, MicArray
from ..core.types import NS_PER_S, ImageFrame, vector_to_azel
from ..evaluation.ground_truth import GroundTruthSample, SpeakerTruth
from .speech import AUDIO_EXTENSIONS, get_library, load_audio_mono, resolve_speech_dir

DEFAULT_START_NS = 1_700_000_000_000_000_000
MAX_TALKERS = 3
RT60_RANGE_S = (0.1, 1.5)  # besides 0 (free field)
MIN_WALL_DISTANCE_M = 0.5  # talker head centre to any room surface
MIN_MIC_WALL_DISTANCE_M = 0.1
MIN_TALKER_ARRAY_DISTANCE_M = 0.3
MAX_TALKER_SPEED_M_S = 3.0
MIN_RIR_STEP_S = 0.02  # shortest RIR anchor spacing (cost: one RIR set per anchor)
SIGNAL_KINDS = ("speech", "white_noise")


class SceneConfigError(ValueError):
    """The scene description is invalid."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class TalkerConfig:
    """One talker: a trajectory and when it speaks.

    ``waypoints``: ``[(t, x, y, z), ...]`` seconds and metres in the array frame, ``t``
    strictly increasing; the position is linearly interpolated and held constant before the
    first and after the last waypoint (one waypoint = static talker). ``speaking``:
    ``[(t_start, t_end), ...]`` seconds (may overlap other talkers' intervals).
    ``signal``: ``"speech"`` (from the speech library) or ``"white_noise"`` (test signal).
    ``talker_id``: ground-truth id (0 = use index + 1). ``gain_db``: source level relative to
    the library's normalised speech level.
    """

    waypoints: list = field(default_factory=list)
    speaking: list = field(default_factory=list)
    talker_id: int = 0
    signal: str = "speech"
    gain_db: float = 0.0

    def __post_init__(self):  # canonical form (tuples), so that configs compare equal
        try:
            self.waypoints = [tuple(float(v) for v in w) for w in self.waypoints]
            self.speaking = [tuple(float(v) for v in iv) for iv in self.speaking]
        except (TypeError, ValueError) as exc:
            raise SceneConfigError(f"waypoints/speaking must hold numbers: {exc}") from None

    def position(self, t) -> np.ndarray:
        """Position(s) ``(..., 3)`` in the array frame at time(s) ``t`` (seconds)."""
        w = np.asarray(self.waypoints, dtype=np.float64).reshape(-1, 4)
        t = np.asarray(t, dtype=np.float64)
        return np.stack([np.interp(t, w[:, 0], w[:, k]) for k in (1, 2, 3)], axis=-1)

    @property
    def is_static(self) -> bool:
        w = np.asarray(self.waypoints, dtype=np.float64).reshape(-1, 4)
        return bool(np.all(np.ptp(w[:, 1:], axis=0) < 1e-9))

    def max_speed(self) -> float:
        w = np.asarray(self.waypoints, dtype=np.float64).reshape(-1, 4)
        if len(w) < 2:
            return 0.0
        return float(np.max(np.linalg.norm(np.diff(w[:, 1:], axis=0), axis=1)
                            / np.diff(w[:, 0])))


@dataclass
class SceneConfig:
    """Everything that defines a simulated scene (plain data; ``dataclasses.asdict`` is JSON-able).

    Camera pose: the optical frame sits at ``camera_translation`` (array frame, metres) with
    rotation ``Rz(yaw) Ry(pitch) Rx(roll) @ R_BODY_OPTICAL`` (``camera_rpy_deg`` = roll,
    pitch, yaw of the camera body about the array axes; zero = looking along +x). Roll must be
    0: the renderer draws upright figures and boxes.
    """

    talkers: list = field(default_factory=list)  # list[TalkerConfig]
    room_dim: tuple = (6.0, 5.0, 3.0)
    rt60_s: float = 0.4
    snr_db: float = 20.0
    diffuse_noise: bool = True
    noise_recording: str | None = None  # file or folder of real noise; None = pink Gaussian
    sensor_noise_rel_db: float = -20.0  # white sensor noise relative to the diffuse noise
    mic_array: str = "respeaker_usb_4mic_v2"  # preset name (core.geometry.PRESETS)
    mic_positions: list | None = None  # flat [x0, y0, z0, ...] overriding the preset
    array_position: tuple = (1.5, 2.5, 1.2)  # array origin in room coordinates
    camera_enabled: bool = True
    camera_translation: tuple = (0.0, 0.0, 0.06)
    camera_rpy_deg: tuple = (0.0, 0.0, 0.0)
    image_width: int = 640
    image_height: int = 480
    hfov_deg: float = 70.0
    fps: float = 15.0
    duration_s: float = 8.0
    sample_rate: int = 16000
    seed: int = 0
    start_ns: int = DEFAULT_START_NS
    speech_dir: str | None = None  # None: AVLOC_SPEECH_DIR or the shipped espeak-ng clips
    gt_rate_hz: float = 20.0
    max_ism_order: int = 17
    max_ism_order_moving: int = 10
    rir_step_s: float = 0.2
    rir_step_max_m: float = 0.05
    vad_threshold_db: float = 30.0
    vad_hangover_s: float = 0.1
    speech_level_dbfs: float = -26.0  # mic-averaged active speech RMS of the output
    name: str = ""

    def __post_init__(self):  # canonical form (tuples), so that configs compare equal
        for f in ("room_dim", "array_position", "camera_translation", "camera_rpy_deg"):
            v = getattr(self, f)
            if isinstance(v, (list, tuple, np.ndarray)):
                setattr(self, f, tuple(float(x) for x in v))
        if self.mic_positions is not None:
            self.mic_positions = [float(x) for x in self.mic_positions]
        self.talkers = [TalkerConfig(**t) if isinstance(t, dict) else t for t in self.talkers]

    @classmethod
    def from_dict(cls, d: dict) -> "SceneConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def build_mic_array(self) -> MicArray:
        if self.mic_positions:
            return MicArray.from_flat(self.mic_positions, name="custom")
        return MicArray.from_preset(self.mic_array)

    def camera_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """``(R_array_optical, t_array_optical)``."""
        roll, pitch, yaw = np.deg2rad(np.asarray(self.camera_rpy_deg, dtype=np.float64))
        cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), \
            np.cos(yaw), np.sin(yaw)
        rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        return rz @ ry @ rx @ R_BODY_OPTICAL, np.asarray(self.camera_translation, float).copy()

    def build_camera(self) -> CameraGeometry | None:
        if not self.camera_enabled:
            return None
        r, t = self.camera_pose()
        return CameraGeometry.from_fov(int(self.image_width), int(self.image_height),
                                       float(self.hfov_deg), r_array_optical=r,
                                       t_array_optical=t)

    def talker_ids(self) -> list[int]:
        return [int(t.talker_id) or i + 1 for i, t in enumerate(self.talkers)]


def validate_config(cfg: SceneConfig) -> None:
    """Raise ``SceneConfigError`` with a clear message if the scene is not simulable."""
    def err(msg):
        raise SceneConfigError(msg)

    dim = np.asarray(cfg.room_dim, dtype=np.float64)
    if dim.shape != (3,) or not np.all(np.isfinite(dim)) or np.any(dim < 1.5):
        err(f"room_dim must be 3 finite sizes >= 1.5 m, got {cfg.room_dim}")
    if not (cfg.rt60_s == 0 or RT60_RANGE_S[0] <= cfg.rt60_s <= RT60_RANGE_S[1]):
        err(f"rt60_s must be 0 (free field) or in [{RT60_RANGE_S[0]}, {RT60_RANGE_S[1]}] s, "
            f"got {cfg.rt60_s}")
    if cfg.rt60_s > 0:
        try:
            pra.inverse_sabine(cfg.rt60_s, dim)
        except ValueError as exc:
            err(f"rt60_s={cfg.rt60_s} s is not reachable in a {dim.tolist()} m room "
                f"(needs absorption > 1): {exc}")
    if not np.isfinite(cfg.snr_db) or not -20 <= cfg.snr_db <= 100:
        err(f"snr_db must be in [-20, 100], got {cfg.snr_db}")
    if int(cfg.sample_rate) < 8000:
        err(f"sample_rate must be >= 8000 Hz, got {cfg.sample_rate}")
    if not 0 < cfg.duration_s <= 600:
        err(f"duration_s must be in (0, 600], got {cfg.duration_s}")
    if not cfg.fps > 0 or not cfg.gt_rate_hz > 0:
        err("fps and gt_rate_hz must be positive")
    if not cfg.rir_step_s > 0 or not cfg.rir_step_max_m > 0:
        err("rir_step_s and rir_step_max_m must be positive")
    if int(cfg.max_ism_order) < 0 or int(cfg.max_ism_order_moving) < 0:
        err("max_ism_order and max_ism_order_moving must be >= 0")
    if cfg.speech_dir is not None and not Path(cfg.speech_dir).is_dir():
        err(f"speech_dir {cfg.speech_dir!r} is not a directory")
    if cfg.noise_recording is not None and not Path(cfg.noise_recording).exists():
        err(f"noise_recording {cfg.noise_recording!r} does not exist")
    try:
        mics = cfg.build_mic_array()
    except GeometryError as exc:
        err(f"bad mic array: {exc}")
    pos = np.asarray(cfg.array_position, dtype=np.float64)
    if pos.shape != (3,):
        err(f"array_position must be (x, y, z), got {cfg.array_position}")
    mic_room = mics.positions + pos
    if np.any(mic_room < MIN_MIC_WALL_DISTANCE_M) or np.any(
            mic_room > dim - MIN_MIC_WALL_DISTANCE_M):
        err(f"the mic array at {pos.tolist()} is not inside the room {dim.tolist()} with "
            f"{MIN_MIC_WALL_DISTANCE_M} m clearance")
    if cfg.camera_enabled:
        if float(cfg.camera_rpy_deg[0]) != 0.0:
            err(f"camera roll {cfg.camera_rpy_deg[0]} deg: the renderer draws upright figures "
                "and boxes (pitch and yaw are supported, roll is not)")
        try:
            cam = cfg.build_camera()
        except ValueError as exc:
            err(f"bad camera: {exc}")
        c_room = cam.t_array_optical + pos
        if np.any(c_room <= 0) or np.any(c_room >= dim):
            err(f"the camera at {c_room.tolist()} (room coordinates) is outside the room")
    if not isinstance(cfg.talkers, (list, tuple)) or len(cfg.talkers) > MAX_TALKERS:
        err(f"a scene has 0 to {MAX_TALKERS} talkers, got {len(cfg.talkers)}")
    ids = cfg.talker_ids()
    if len(set(ids)) != len(ids) or min(ids, default=1) < 1:
        err(f"talker ids must be unique and positive, got {ids}")
    for i, tk in enumerate(cfg.talkers):
        name = f"talker {ids[i]}"
        if not isinstance(tk, TalkerConfig):
            err(f"{name}: expected TalkerConfig, got {type(tk).__name__}")
        if tk.signal not in SIGNAL_KINDS:
            err(f"{name}: signal must be one of {SIGNAL_KINDS}, got {tk.signal!r}")
        try:
            w = np.asarray(tk.waypoints, dtype=np.float64)
        except (TypeError, ValueError):
            err(f"{name}: waypoints must be a list of (t, x, y, z)")
        if w.ndim != 2 or w.shape[1] != 4 or len(w) == 0:
            err(f"{name}: waypoints must be a non-empty list of (t, x, y, z), got shape "
                f"{w.shape}")
        if not np.all(np.isfinite(w)):
            err(f"{name}: waypoints contain NaN/Inf")
        if np.any(np.diff(w[:, 0]) <= 0):
            err(f"{name}: waypoint times must be strictly increasing, got {w[:, 0].tolist()}")
        room_pts = w[:, 1:] + pos
        bad = np.flatnonzero(np.any(room_pts < MIN_WALL_DISTANCE_M, axis=1)
                             | np.any(room_pts > dim - MIN_WALL_DISTANCE_M, axis=1))
        if bad.size:
            k = int(bad[0])
            err(f"{name}: waypoint {k} at {w[k, 1:].round(3).tolist()} (array frame) = "
                f"{room_pts[k].round(3).tolist()} (room) is outside the room {dim.tolist()} or "
                f"closer than {MIN_WALL_DISTANCE_M} m to a wall/floor/ceiling")
        t_dense = np.linspace(0.0, max(cfg.duration_s, w[-1, 0]), 2000)
        dmin = np.min(np.linalg.norm(tk.position(t_dense), axis=1))
        if dmin < MIN_TALKER_ARRAY_DISTANCE_M:
            err(f"{name}: comes within {dmin:.2f} m of the array (min "
                f"{MIN_TALKER_ARRAY_DISTANCE_M} m)")
        if tk.max_speed() > MAX_TALKER_SPEED_M_S:
            err(f"{name}: moves at {tk.max_speed():.2f} m/s (max {MAX_TALKER_SPEED_M_S})")
        if tk.max_speed() * MIN_RIR_STEP_S > cfg.rir_step_max_m:
            err(f"{name}: at {tk.max_speed():.2f} m/s it moves more than rir_step_max_m = "
                f"{cfg.rir_step_max_m} m between RIR anchors {MIN_RIR_STEP_S} s apart (the "
                "shortest); raise rir_step_max_m or slow the talker")
        for iv in tk.speaking:
            if len(iv) != 2 or not (0 <= iv[0] < iv[1] <= cfg.duration_s + 1e-9):
                err(f"{name}: speaking interval {tuple(iv)} must satisfy "
                    f"0 <= start < end <= duration_s ({cfg.duration_s})")


# --------------------------------------------------------------------------------------------
# Diffuse (spatially coherent) noise
# --------------------------------------------------------------------------------------------
def diffuse_coherence(mic_positions: np.ndarray, freqs: np.ndarray,
                      c: float = SPEED_OF_SOUND_M_S) -> np.ndarray:
    """Spherically isotropic coherence ``sin(k d)/(k d)``, shape ``(F, M, M)``."""
    p = np.asarray(mic_positions, dtype=np.float64)
    d = np.linalg.norm(p[:, None] - p[None, :], axis=-1)
    # np.sinc(x) = sin(pi x) / (pi x), so np.sinc(2 f d / c) = sin(k d) / (k d), k = 2 pi f / c.
    return np.sinc(2.0 * np.asarray(freqs)[:, None, None] * d[None] / c)


def diffuse_noise(mic_positions: np.ndarray, n_samples: int, sample_rate: int,
                  rng: np.random.Generator, base: np.ndarray | None = None,
                  spectrum: str = "white", nfft: int = 512) -> np.ndarray:
    """``(M, n_samples)`` noise whose inter-mic coherence is that of a diffuse field.

    ``base``: ``(M, n)`` mutually independent input channels (e.g. segments of a real noise
    recording); default Gaussian. ``spectrum="pink"`` shapes Gaussian input to 1/f (above
    50 Hz). Mixing per STFT bin with the symmetric square root ``V sqrt(L) V^T`` of the
    coherence matrix (eigendecomposition) keeps each channel's power spectrum. Output: unit
    mean power per channel.
    """
    m = len(mic_positions)
    hop = nfft // 2
    n_pad = n_samples + nfft
    x = rng.standard_normal((m, n_pad)) if base is None else np.asarray(base, float)[:, :n_pad]
    if x.shape[1] < n_pad:
        x = np.pad(x, ((0, 0), (0, n_pad - x.shape[1])), mode="wrap")
    f, _, z = stft(x, fs=sample_rate, nperseg=nfft, noverlap=nfft - hop)
    if base is None and spectrum == "pink":
        z = z / np.sqrt(np.maximum(f, 50.0) / 1000.0)[None, :, None]
    gamma = diffuse_coherence(mic_positions, f)
    lam, v = np.linalg.eigh(gamma)
    # Symmetric square root V sqrt(L) V^T: unlike V sqrt(L) it does not depend on the
    # eigenvectors' signs/order, so it varies smoothly over frequency (short mixing filters).
    mix = np.einsum("fik,fk,fjk->fij", v, np.sqrt(np.clip(lam, 0.0, None)), v)
    z = np.einsum("fij,jft->ift", mix, z)
    _, y = istft(z, fs=sample_rate, nperseg=nfft, noverlap=nfft - hop)
    y = y[:, :n_samples]
    return y / np.sqrt(np.mean(y ** 2) + 1e-30)


def _noise_recording_base(path: str, m: int, n: int, sample_rate: int,
                          rng: np.random.Generator) -> np.ndarray:
    """``m`` segments of a real noise recording at widely separated offsets (wrap-around)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in AUDIO_EXTENSIONS)
        if not files:
            raise SceneConfigError(f"noise_recording folder {p} holds no audio files")
        p = files[int(rng.integers(len(files)))]
    x = load_audio_mono(p, sample_rate)
    x = x - np.mean(x)
    if len(x) < sample_rate:
        raise SceneConfigError(f"noise recording {p} is shorter than 1 s")
    start = int(rng.integers(len(x)))
    offsets = start + (np.arange(m) * len(x)) // m  # m evenly spaced offsets, wrapped
    idx = (offsets[:, None] + np.arange(n)[None, :]) % len(x)
    return x[idx]


# --------------------------------------------------------------------------------------------
# Room impulse responses
# --------------------------------------------------------------------------------------------
def eyring_absorption(rt60_s: float, room_dim) -> float:
    """Uniform energy absorption giving ``rt60_s`` by Eyring's formula
    ``RT60 = 0.161 V / (-S ln(1 - a))``.

    An image-source model with one reflection coefficient decays as Eyring predicts (each
    reflection keeps 1 - a of the energy, c S / 4V reflections per second). Sabine's formula
    (``pra.inverse_sabine``) is its small-absorption limit (-ln(1 - a) ~ a) and so asks for too
    much absorption when the RT60 is short: with Sabine absorption an RT60 of 0.2 s in an
    8 x 7 x 3.5 m room realises about 0.15 s (measured T30). For long RT60s the two agree.
    """
    d = np.asarray(room_dim, dtype=np.float64)
    vol = float(np.prod(d))
    surf = 2.0 * float(d[0] * d[1] + d[0] * d[2] + d[1] * d[2])
    sabine_const = 24.0 * np.log(10.0) / SPEED_OF_SOUND_M_S  # 0.161 s/m
    return float(1.0 - np.exp(-sabine_const * vol / (surf * rt60_s)))


class RoomAcoustics:
    """Hybrid ISM + diffuse stochastic tail RIRs for one room and one mic array."""

    def __init__(self, room_dim, rt60_s: float, mic_room: np.ndarray, sample_rate: int):
        self.dim = np.asarray(room_dim, dtype=np.float64)
        self.rt60 = float(rt60_s)
        self.mics = np.asarray(mic_room, dtype=np.float64)
        self.fs = int(sample_rate)
        self.c = SPEED_OF_SOUND_M_S
        if self.rt60 > 0:
            _, self.full_order = pra.inverse_sabine(self.rt60, self.dim)
            self.absorption = eyring_absorption(self.rt60, self.dim)
        else:
            self.absorption, self.full_order = 1.0, 0
        self.xfade_s = 0.02
        self.match_s = 0.03

    def plan(self, order_cap: int, max_direct_s: float) -> dict:
        """ISM order, whether a tail is needed, the tail start ``t_c`` and the RIR length."""
        order = int(min(self.full_order, order_cap))
        tail = self.rt60 > 0 and self.full_order > order
        t_c = order / (self.c * np.sqrt(np.sum(1.0 / self.dim ** 2)))
        t_c = max(t_c, max_direct_s + self.xfade_s + self.match_s + 0.01)
        if tail:
            length_s = t_c + self.rt60
        else:
            length_s = None  # whatever the ISM gives
        return {"order": order, "tail": tail, "t_c": t_c, "length_s": length_s}

    def ism(self, src_room: np.ndarray, order: int, length: int | None) -> np.ndarray:
        """``(P, M, L)`` image-source RIRs, direct path at exactly distance / c."""
        src_room = np.atleast_2d(src_room)
        room = pra.ShoeBox(self.dim, fs=self.fs, materials=pra.Material(float(self.absorption)),
                           max_order=int(order), air_absorption=False)
        room.add_microphone_array(self.mics.T.copy())
        for s in src_room:
            room.add_source(np.asarray(s, dtype=np.float64))
        room.compute_rir()
        off = pra.constants.get("frac_delay_length") // 2
        raw = [[np.asarray(room.rir[m][p])[off:] for m in range(len(self.mics))]
               for p in range(len(src_room))]
        if length is None:
            length = max(len(h) for row in raw for h in row)
        out = np.zeros((len(src_room), len(self.mics), length))
        for p, row in enumerate(raw):
            for m, h in enumerate(row):
                k = min(length, len(h))
                out[p, m, :k] = h[:k]
        return out

    def tail_and_windows(self, plan: dict, rng: np.random.Generator):
        """Unit-level diffuse tail ``(M, L)`` (envelope and crossfade applied) and the early
        crossfade window ``(L_early,)``."""
        fs = self.fs
        length = int(np.ceil(plan["length_s"] * fs))
        t = np.arange(length) / fs
        t_c, xf = plan["t_c"], self.xfade_s
        theta = np.clip((t - (t_c - xf)) / xf, 0.0, 1.0) * (np.pi / 2)
        w_early = np.cos(theta)
        w_tail = np.sin(theta)
        env = 10.0 ** (-3.0 * (t - t_c) / self.rt60)  # -60 dB per rt60 (amplitude)
        noise = diffuse_noise(self.mics, length, fs, rng, spectrum="white")
        tail = noise * (env * w_tail)[None, :]
        l_early = int(np.ceil(t_c * fs))
        return tail, w_early[:l_early]

    def tail_gain(self, early: np.ndarray, plan: dict) -> np.ndarray:
        """Tail amplitude for ISM RIRs ``(P, M, L)`` matching their energy just before t_c."""
        fs = self.fs
        a = int((plan["t_c"] - self.xfade_s - self.match_s) * fs)
        b = int((plan["t_c"] - self.xfade_s) * fs)
        e_ism = np.mean(early[:, :, a:b] ** 2, axis=(1, 2))
        t = np.arange(a, b) / fs
        e_unit = np.mean(10.0 ** (-6.0 * (t - plan["t_c"]) / self.rt60))
        return np.sqrt(e_ism / e_unit)

    def rirs(self, src_room: np.ndarray, order_cap: int, rng: np.random.Generator) -> np.ndarray:
        """Complete RIRs ``(P, M, L)`` for static sources (hybrid when needed)."""
        src_room = np.atleast_2d(src_room)
        d = np.linalg.norm(src_room[:, None] - self.mics[None], axis=-1).max()
        plan = self.plan(order_cap, d / self.c)
        if not plan["tail"]:
            return self.ism(src_room, plan["order"], None)
        tail, w_early = self.tail_and_windows(plan, rng)
        early = self.ism(src_room, plan["order"], len(w_early))
        g = self.tail_gain(early, plan)
        out = g[:, None, None] * tail[None]
        out[:, :, :len(w_early)] += early * w_early
        return out


def room_impulse_responses(cfg: SceneConfig, positions_array, moving: bool = False,
                           seed: int | None = None) -> np.ndarray:
    """RIRs ``(P, M, L)`` from array-frame positions ``(P, 3)`` to the scene's mics, exactly as
    the simulator builds them (``moving=True``: with the moving-talker ISM order)."""
    mics = cfg.build_mic_array()
    pos = np.asarray(cfg.array_position, dtype=np.float64)
    ac = RoomAcoustics(cfg.room_dim, cfg.rt60_s, mics.positions + pos, cfg.sample_rate)
    cap = cfg.max_ism_order_moving if moving else cfg.max_ism_order
    rng = np.random.default_rng(cfg.seed if seed is None else seed)
    return ac.rirs(np.atleast_2d(positions_array) + pos, cap, rng)


# --------------------------------------------------------------------------------------------
# Sources, activity and spatialisation
# --------------------------------------------------------------------------------------------
def _interval_mask(intervals, n: int, fs: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for a, b in intervals:
        mask[int(round(a * fs)):int(round(b * fs))] = True
    return mask


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def dry_source(tk: TalkerConfig, voice: list[int] | None, cfg: SceneConfig,
               rng: np.random.Generator) -> np.ndarray:
    """The talker's dry signal (float64, ``n`` samples): silence outside its intervals.

    ``voice``: the clip indices of the one speaker this talker is (``SpeechLibrary.voices``;
    see :func:`talker_voices`); None = any clip."""
    fs = int(cfg.sample_rate)
    n = int(round(cfg.duration_s * fs))
    x = np.zeros(n)
    mask = _interval_mask(tk.speaking, n, fs)
    gain = 10.0 ** (tk.gain_db / 20.0)
    if tk.signal == "speech":
        lib = get_library(cfg.speech_dir, fs)
        for a, b in _runs(mask):
            x[a:b] = lib.utterance(rng, (b - a) / fs, clip_indices=voice)
    else:  # white_noise
        for a, b in _runs(mask):
            x[a:b] = 0.1 * rng.standard_normal(b - a)
    fade = int(0.01 * fs)
    for a, b in _runs(mask):  # 10 ms fades at interval edges
        m = min(fade, (b - a) // 2)
        if m > 0:
            r = np.linspace(0.0, 1.0, m)
            x[a:a + m] *= r
            x[b - m:b] *= r[::-1]
    return x * gain


def talker_voices(cfg: SceneConfig, rng: np.random.Generator) -> list[list[int] | None]:
    """One speaker per talker (their clip indices), distinct while the library has enough
    speakers, drawn at random per scene: a person keeps one voice through the scene, and
    voices vary across scenes. None for talkers that are not speech sources."""
    voices = [None] * len(cfg.talkers)
    speech = [i for i, tk in enumerate(cfg.talkers) if tk.signal == "speech"]
    if speech:
        pool = get_library(cfg.speech_dir, int(cfg.sample_rate)).voices
        order = rng.permutation(len(pool))
        for k, i in enumerate(speech):
            voices[i] = pool[int(order[k % len(pool)])]
    return voices


def activity_mask(x: np.ndarray, intervals, fs: int, threshold_db: float,
                  hangover_s: float) -> np.ndarray:
    """Per-sample ground-truth activity: in an interval AND frame energy of the dry signal
    within ``threshold_db`` of the talker's speech level (95th percentile frame energy),
    held for ``hangover_s`` after the last active frame."""
    n = len(x)
    interval = _interval_mask(intervals, n, fs)
    if not interval.any():
        return interval
    hop = int(round(0.01 * fs))
    win = 2 * hop
    nf = int(np.ceil(n / hop))
    xp = np.pad(x, (0, nf * hop + win - n))
    frames = np.lib.stride_tricks.sliding_window_view(xp, win)[::hop][:nf]
    e = np.mean(frames ** 2, axis=1)
    e_int = e[interval[np.minimum(np.arange(nf) * hop + hop // 2, n - 1)]]
    ref = np.percentile(e_int, 95) if e_int.size else e.max()
    act = e > ref * 10.0 ** (-threshold_db / 10.0)
    hang = int(round(hangover_s / (hop / fs)))
    if hang > 0:  # trailing hangover: a frame is active if any of the last `hang` frames was
        c = np.concatenate([[0], np.cumsum(act)])
        idx = np.arange(nf)
        act = (c[idx + 1] - c[np.maximum(idx + 1 - (hang + 1), 0)]) > 0
    per_sample = np.repeat(act, hop)[:n]
    return per_sample & interval


def _rir_step(tk: TalkerConfig, cfg: SceneConfig) -> float:
    """Seconds between RIR anchors: rir_step_s, shortened to move <= rir_step_max_m."""
    v = tk.max_speed()
    step = cfg.rir_step_s if v <= 0 else min(cfg.rir_step_s, cfg.rir_step_max_m / v)
    return max(step, MIN_RIR_STEP_S)  # validate_config: the talker still moves <= the max


def spatialise(x: np.ndarray, tk: TalkerConfig, cfg: SceneConfig, acoustics: RoomAcoustics,
               rng: np.random.Generator) -> np.ndarray:
    """Reverberant image ``(M, n)`` of dry signal ``x`` emitted along the talker's trajectory."""
    fs = int(cfg.sample_rate)
    n = len(x)
    m = len(acoustics.mics)
    pos0 = np.asarray(cfg.array_position, dtype=np.float64)
    y = np.zeros((m, n))
    if not np.any(x):
        return y
    if tk.is_static:
        h = acoustics.rirs(tk.position(0.0) + pos0, cfg.max_ism_order, rng)[0]
        return oaconvolve(x[None, :], h, axes=1)[:, :n]
    hs = int(round(_rir_step(tk, cfg) * fs))
    n_anchor = int(np.ceil(n / hs)) + 1
    anchors = np.arange(n_anchor) * hs  # sample index of each anchor
    # Hann pieces: w_k(i) = cos^2(pi (i - a_k) / (2 hs)) for |i - a_k| < hs; they sum to 1.
    win = np.cos(0.5 * np.pi * np.arange(-hs + 1, hs) / hs) ** 2
    # Which anchors carry signal?
    nz = np.concatenate([[0], np.cumsum(x != 0)])
    lo = np.clip(anchors - hs + 1, 0, n)
    hi = np.clip(anchors + hs, 0, n)
    used = np.flatnonzero(nz[hi] - nz[lo] > 0)
    pos = tk.position(anchors[used] / fs) + pos0
    d = np.linalg.norm(pos[:, None] - acoustics.mics[None], axis=-1).max()
    plan = acoustics.plan(cfg.max_ism_order_moving, d / acoustics.c)
    if plan["tail"]:
        tail, w_early = acoustics.tail_and_windows(plan, rng)
        early = acoustics.ism(pos, plan["order"], len(w_early))
        gains = acoustics.tail_gain(early, plan)
        early = early * w_early
    else:
        early = acoustics.ism(pos, plan["order"], None)
        gains = None
    g_env = np.zeros(n)
    for j, k in enumerate(used):
        a = anchors[k] - hs + 1
        i0, i1 = max(a, 0), min(a + len(win), n)
        piece = x[i0:i1] * win[i0 - a:i1 - a]
        if gains is not None:
            g_env[i0:i1] += gains[j] * win[i0 - a:i1 - a]
        if not np.any(piece):
            continue
        seg = oaconvolve(piece[None, :], early[j], axes=1)
        e = min(n, i0 + seg.shape[1])
        y[:, i0:e] += seg[:, :e - i0]
    if gains is not None:
        y += oaconvolve((x * g_env)[None, :], tail, axes=1)[:, :n]
    return y


@dataclass
class AudioComponents:
    """The parts of a scene's audio, after the output gain (sum = ``SceneRecording.audio``)."""

    speech: np.ndarray  # (T, M, N) reverberant image of each talker
    noise: np.ndarray  # (M, N)
    dry: np.ndarray  # (T, N) dry source signals (same gain as the images)
    active: np.ndarray  # (T, N) bool, ground-truth activity per sample
    gain: float  # output gain applied to everything

    @property
    def mixture(self) -> np.ndarray:
        return self.speech.sum(axis=0) + self.noise


def simulate_audio(cfg: SceneConfig) -> AudioComponents:
    """The audio part of ``simulate_scene`` with the components kept apart."""
    validate_config(cfg)
    fs = int(cfg.sample_rate)
    n = int(round(cfg.duration_s * fs))
    mics = cfg.build_mic_array()
    mic_room = mics.positions + np.asarray(cfg.array_position, dtype=np.float64)
    acoustics = RoomAcoustics(cfg.room_dim, cfg.rt60_s, mic_room, fs)
    ss = np.random.SeedSequence(int(cfg.seed))
    s_speech, s_rir, s_noise, s_voice = ss.spawn(4)
    t_count = len(cfg.talkers)
    rng_src = [np.random.default_rng(s) for s in s_speech.spawn(max(t_count, 1))]
    rng_rir = [np.random.default_rng(s) for s in s_rir.spawn(max(t_count, 1))]
    rng_noise = np.random.default_rng(s_noise)
    voices = talker_voices(cfg, np.random.default_rng(s_voice))

    dry = np.zeros((t_count, n))
    active = np.zeros((t_count, n), dtype=bool)
    speech = np.zeros((t_count, mics.n_mics, n))
    for i, tk in enumerate(cfg.talkers):
        dry[i] = dry_source(tk, voices[i], cfg, rng_src[i])
        active[i] = activity_mask(dry[i], tk.speaking, fs, cfg.vad_threshold_db,
                                  cfg.vad_hangover_s)
        speech[i] = spatialise(dry[i], tk, cfg, acoustics, rng_rir[i])

    total = speech.sum(axis=0)
    any_active = active.any(axis=0)
    if any_active.any():
        p_speech = float(np.mean(total[:, any_active] ** 2))
    else:
        p_speech = 0.0
    if p_speech <= 0:  # no speech: noise at the level speech would have at the nominal level
        p_speech = 10.0 ** (cfg.speech_level_dbfs / 10.0)
        ref_gain = 1.0
    else:
        ref_gain = 10.0 ** (cfg.speech_level_dbfs / 20.0) / np.sqrt(p_speech)

    if cfg.diffuse_noise:
        base = None
        if cfg.noise_recording:
            base = _noise_recording_base(cfg.noise_recording, mics.n_mics, n + 1024, fs,
                                         rng_noise)
        noise = diffuse_noise(mics.positions, n, fs, rng_noise, base=base, spectrum="pink")
        sensor = rng_noise.standard_normal((mics.n_mics, n))
        noise = noise + 10.0 ** (cfg.sensor_noise_rel_db / 20.0) * sensor
    else:
        noise = rng_noise.standard_normal((mics.n_mics, n))
    p_noise = float(np.mean(noise ** 2))
    noise *= np.sqrt(p_speech / (p_noise * 10.0 ** (cfg.snr_db / 10.0)))

    gain = ref_gain
    peak = np.max(np.abs(total + noise)) * gain
    if peak > 0.95:
        gain *= 0.95 / peak
    return AudioComponents(speech=speech * gain, noise=noise * gain, dry=dry * gain,
                           active=active, gain=float(gain))


# --------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------
@dataclass
class SceneRecording:
    audio: np.ndarray  # (M, N) float32
    sample_rate: int
    start_ns: int
    mic_array: MicArray
    camera: CameraGeometry | None
    camera_pose_in_array: tuple | None  # (R (3, 3), t (3,)): p_array = R p_optical + t
    images: list  # list[ImageFrame], bgr8
    ground_truth: list  # list[GroundTruthSample]
    config: dict


def image_stamps_ns(cfg: SceneConfig) -> np.ndarray:
    k = np.arange(int(np.ceil(cfg.duration_s * cfg.fps - 1e-9)))
    return cfg.start_ns + np.round(k * NS_PER_S / cfg.fps).astype(np.int64)


def gt_stamps_ns(cfg: SceneConfig) -> np.ndarray:
    k = np.arange(int(np.ceil(cfg.duration_s * cfg.gt_rate_hz - 1e-9)))
    grid = cfg.start_ns + np.round(k * NS_PER_S / cfg.gt_rate_hz).astype(np.int64)
    if cfg.camera_enabled:
        grid = np.concatenate([grid, image_stamps_ns(cfg)])
    return np.unique(grid)


def simulate_scene(cfg: SceneConfig, timings: dict | None = None) -> SceneRecording:
    """Simulate audio, camera frames and ground truth for ``cfg`` (deterministic in its seed).

    ``timings`` (optional dict) receives seconds spent in ``audio`` and ``video``.
    """
    from .render import SceneRenderer, mouth_openness

    # record the speech folder actually used, so the bag's scene config reproduces the scene
    cfg = dataclasses.replace(cfg, speech_dir=resolve_speech_dir(cfg.speech_dir))
    t0 = time.perf_counter()
    comps = simulate_audio(cfg)
    t1 = time.perf_counter()
    fs = int(cfg.sample_rate)
    n = comps.noise.shape[1]
    mics = cfg.build_mic_array()
    camera = cfg.build_camera()
    pose = cfg.camera_pose() if camera is not None else None
    ids = cfg.talker_ids()
    pos0 = np.asarray(cfg.array_position, dtype=np.float64)

    renderer = None
    if camera is not None:
        render_seed = np.random.SeedSequence(int(cfg.seed)).spawn(4)[3]
        renderer = SceneRenderer(camera, len(cfg.talkers), render_seed,
                                 room_dim=cfg.room_dim, array_position=pos0)

    def sample_index(stamps):
        return np.clip(np.round((stamps - cfg.start_ns) * fs / NS_PER_S).astype(np.int64),
                       0, n - 1)

    ref_rms = [float(np.sqrt(np.mean(comps.dry[i][comps.active[i]] ** 2)))
               if comps.active[i].any() else 1.0 for i in range(len(cfg.talkers))]
    images = []
    if renderer is not None:
        st = image_stamps_ns(cfg)
        idx = sample_index(st)
        tsec = (st - cfg.start_ns) / NS_PER_S
        for j, stamp in enumerate(st):
            positions = [tk.position(tsec[j]) for tk in cfg.talkers]
            mouths = [mouth_openness(comps.dry[i], int(idx[j]), fs, ref_rms[i])
                      if comps.active[i, idx[j]] else 0.0 for i in range(len(cfg.talkers))]
            images.append(ImageFrame(image=renderer.render(positions, mouths, frame_index=j),
                                     stamp_ns=int(stamp)))

    gts = []
    st = gt_stamps_ns(cfg)
    idx = sample_index(st)
    tsec = (st - cfg.start_ns) / NS_PER_S
    traj = [tk.position(tsec) for tk in cfg.talkers]  # (S, 3) each
    for j, stamp in enumerate(st):
        speakers = []
        for i in range(len(cfg.talkers)):
            p = traj[i][j]
            az, el = vector_to_azel(p)
            box = renderer.box(p) if renderer is not None else None
            speakers.append(SpeakerTruth(
                speaker_id=ids[i], azimuth=float(az), elevation=float(el),
                active=bool(comps.active[i, idx[j]]), position=tuple(float(v) for v in p),
                box=box))
        gts.append(GroundTruthSample(stamp_ns=int(stamp), speakers=tuple(speakers)))
    t2 = time.perf_counter()
    if timings is not None:
        timings["audio"] = t1 - t0
        timings["video"] = t2 - t1
    return SceneRecording(
        audio=comps.mixture.astype(np.float32), sample_rate=fs, start_ns=int(cfg.start_ns),
        mic_array=mics, camera=camera, camera_pose_in_array=pose, images=images,
        ground_truth=gts, config=cfg.to_dict())
