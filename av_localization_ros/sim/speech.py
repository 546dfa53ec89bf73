"""Dry speech sources for the scene simulator.

``SpeechLibrary`` holds mono clips at one sample rate, each trimmed of leading/trailing silence
and normalised to the same active-speech RMS (``CLIP_ACTIVE_RMS``), so that talkers mix at equal
source level unless a scene gives them a gain.

Where the clips come from:

* a directory of real recordings (``directory=...``, or the environment variable
  ``AVLOC_SPEECH_DIR``): every ``.wav``, ``.flac``, ``.ogg`` and ``.mp3`` file in it (not
  recursive), resampled with ``scipy.signal.resample_poly``. Files libsndfile cannot read (mp3
  needs libsndfile >= 1.1) are skipped and listed in ``SpeechLibrary.skipped``.
* otherwise the clips shipped in ``sim/assets/``: eight short sentences synthesised with
  espeak-ng in eight voices by ``scripts/make_speech_assets.sh`` (see ``assets/README.md``).

``default_speech_dir()`` is the team's shared folder of real speech
(``<repo>/../shared/data/speech``) when it exists; it does not exist on a fresh clone.

Voices: a talker is one person, so the simulator gives each talker the clips of one speaker.
``speaker_of(stem)`` names the speaker of a file: its stem without a trailing utterance number
(``cmu_arctic_us_aew_a0002`` -> ``cmu_arctic_us_aew``, ``vctk_p286_011`` -> ``vctk_p286``,
``rtvc_1320_00000`` -> ``rtvc_1320``); a stem without one is a speaker of its own. Name your
own recordings ``<speaker>_<number>.wav`` to group them.
"""
from __future__ import annotations

import functools
import os
import re
import warnings
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
SPEECH_DIR_ENV = "AVLOC_SPEECH_DIR"
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
CLIP_ACTIVE_RMS = 0.1  # RMS of every clip over its active (non-silent) frames
_SILENCE_DB = 40.0  # frames more than this below the loudest frame count as silence
_FRAME_S = 0.02
_EDGE_FADE_S = 0.005
_UTTERANCE_SUFFIX = re.compile(r"^(.+?)[_-][a-z]?\d+$", re.IGNORECASE)


def speaker_of(stem: str) -> str:
    """The speaker a clip belongs to: its file stem without a trailing utterance number."""
    m = _UTTERANCE_SUFFIX.match(stem)
    return m.group(1) if m else stem


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def default_speech_dir() -> Path | None:
    """``<repo>/../shared/data/speech`` if that folder exists, else None."""
    d = _repo_root().parent / "shared" / "data" / "speech"
    return d if d.is_dir() else None


def default_noise_dir() -> Path | None:
    """``<repo>/../shared/data/noise`` (real noise recordings) if it exists, else None."""
    d = _repo_root().parent / "shared" / "data" / "noise"
    return d if d.is_dir() else None


def _frame_energy_db(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.full(1, 10 * np.log10(np.mean(x ** 2) + 1e-20))
    e = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    return 10.0 * np.log10(e + 1e-20)


def trim_silence(x: np.ndarray, sample_rate: int, threshold_db: float = _SILENCE_DB,
                 margin_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing frames more than ``threshold_db`` below the loudest frame."""
    frame = max(1, int(round(_FRAME_S * sample_rate)))
    e = _frame_energy_db(x, frame)
    active = np.flatnonzero(e > e.max() - threshold_db)
    if active.size == 0:
        return x[:0]
    margin = int(round(margin_s * sample_rate))
    a = max(0, active[0] * frame - margin)
    b = min(len(x), (active[-1] + 1) * frame + margin)
    return x[a:b]


def active_rms(x: np.ndarray, sample_rate: int, threshold_db: float = _SILENCE_DB) -> float:
    """RMS over frames within ``threshold_db`` of the loudest frame (speech-level estimate)."""
    frame = max(1, int(round(_FRAME_S * sample_rate)))
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x ** 2) + 1e-20))
    e = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    edb = 10.0 * np.log10(e + 1e-20)
    sel = edb > edb.max() - threshold_db
    return float(np.sqrt(np.mean(e[sel]) + 1e-20))


def _fade_edges(x: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(x) // 2)
    if n > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def load_audio_mono(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Read an audio file, average its channels and resample to ``sample_rate`` (float64)."""
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    x = data.mean(axis=1)
    if sr != sample_rate:
        g = gcd(int(sr), int(sample_rate))
        x = resample_poly(x, sample_rate // g, int(sr) // g)
    return x


class SpeechLibrary:
    """Mono speech clips at ``sample_rate``, trimmed and level-normalised.

    Attributes: ``clips`` (list of float32 arrays), ``names`` (file stems), ``source``
    (``"directory"`` or ``"assets"``), ``directory`` (Path), ``skipped`` (``[(name, reason)]``),
    ``voices`` (clip indices per speaker, speakers in name order; see :func:`speaker_of`).
    """

    def __init__(self, directory: str | os.PathLike | None = None, sample_rate: int = 16000,
                 min_duration_s: float = 0.5):
        directory = resolve_speech_dir(directory)
        self.sample_rate = int(sample_rate)
        self.source = "assets" if directory is None else "directory"
        self.directory = ASSETS_DIR if directory is None else Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"speech directory {self.directory} does not exist")
        self.clips: list[np.ndarray] = []
        self.names: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        files = sorted(p for p in self.directory.iterdir()
                       if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
        for p in files:
            try:
                x = load_audio_mono(p, self.sample_rate)
            except Exception as exc:  # libsndfile without mp3 support, corrupt files, ...
                self.skipped.append((p.name, f"{type(exc).__name__}: {exc}"))
                continue
            x = trim_silence(x, self.sample_rate)
            if len(x) < min_duration_s * self.sample_rate:
                self.skipped.append((p.name, "shorter than min_duration_s after trimming"))
                continue
            x = x * (CLIP_ACTIVE_RMS / active_rms(x, self.sample_rate))
            x = _fade_edges(x, int(_EDGE_FADE_S * self.sample_rate))
            self.clips.append(x.astype(np.float32))
            self.names.append(p.stem)
        if self.skipped:
            warnings.warn(f"SpeechLibrary: skipped {len(self.skipped)} file(s) in "
                          f"{self.directory}: {self.skipped}", stacklevel=2)
        if not self.clips:
            raise ValueError(f"no usable speech files in {self.directory}")
        by_speaker: dict[str, list[int]] = {}
        for i, name in enumerate(self.names):
            by_speaker.setdefault(speaker_of(name), []).append(i)
        self.voices: list[list[int]] = [by_speaker[k] for k in sorted(by_speaker)]

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def total_duration_s(self) -> float:
        return sum(len(c) for c in self.clips) / self.sample_rate

    def utterance(self, rng: np.random.Generator, duration_s: float,
                  clip_indices=None, pause_s: tuple[float, float] = (0.1, 0.35)) -> np.ndarray:
        """Speech filling exactly ``round(duration_s * sample_rate)`` samples (float32).

        Clips are drawn at random (no clip twice in a row when there is a choice) from
        ``clip_indices`` (default: all), separated by pauses drawn from ``pause_s``; the first
        clip starts at a random point of its first half so that utterances do not all begin
        with the same word. The end is cut with a short fade.
        """
        n = int(round(duration_s * self.sample_rate))
        out = np.zeros(n, dtype=np.float32)
        if n == 0:
            return out
        pool = list(range(len(self.clips))) if clip_indices is None else list(clip_indices)
        if not pool:
            raise ValueError("clip_indices is empty")
        fade = int(_EDGE_FADE_S * self.sample_rate)
        pos, last, first = 0, None, True
        while pos < n:
            choices = [i for i in pool if i != last] or pool
            idx = int(choices[rng.integers(len(choices))])
            clip = self.clips[idx]
            if first:
                clip = _fade_edges(clip[int(rng.integers(0, len(clip) // 2 + 1)):].copy(), fade)
                first = False
            k = min(len(clip), n - pos)
            out[pos:pos + k] = clip[:k]
            if k < len(clip):  # cut mid-clip: fade out
                m = min(fade, k)
                out[pos + k - m:pos + k] *= np.linspace(1.0, 0.0, m, dtype=np.float32)
            pos += k + int(round(rng.uniform(*pause_s) * self.sample_rate))
            last = idx
        return out


def resolve_speech_dir(directory: str | os.PathLike | None) -> str | os.PathLike | None:
    """The speech folder to use: ``directory``, else ``$AVLOC_SPEECH_DIR``, else None (the
    shipped clips)."""
    return directory if directory is not None else (os.environ.get(SPEECH_DIR_ENV) or None)


@functools.lru_cache(maxsize=8)
def _cached_library(directory: str | None, sample_rate: int) -> SpeechLibrary:
    return SpeechLibrary(directory, sample_rate)


def get_library(directory: str | os.PathLike | None = None,
                sample_rate: int = 16000) -> SpeechLibrary:
    """A cached ``SpeechLibrary`` (loading a directory of mp3s is not free)."""
    directory = resolve_speech_dir(directory)
    return _cached_library(None if directory is None else str(Path(directory).resolve()),
                           int(sample_rate))
