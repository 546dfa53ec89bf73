"""Physically simulated test signals shared by the DoA, pipeline and stream tests:
pyroomacoustics rooms (or free field) around the ReSpeaker 4-mic array at 16 kHz."""
from __future__ import annotations

import numpy as np
import pyroomacoustics as pra

from av_localization_ros.core.geometry import PRESETS
from av_localization_ros.core.types import AudioWindow

FS = 16000
RESPEAKER = PRESETS["respeaker_usb_4mic_v2"]


def simulate(mics, sources, signals, rt60=0.0, room_dim=(6.0, 5.0, 3.0), center=(3.0, 2.4, 1.2),
             max_order=6, snr_db=None, seed=0):
    """Mic signals ``(M, N)`` float32, peak 0.5, for sources at ``sources`` (array-frame metres).

    ``rt60 = 0``: free field (no reflections). Otherwise a shoebox whose uniform absorption
    gives ``rt60`` (Sabine), image sources up to ``max_order``. Optional spatially white noise
    at ``snr_db`` re the mean mic signal power.
    """
    center = np.asarray(center, dtype=float)
    if rt60 > 0:
        e_abs, _ = pra.inverse_sabine(rt60, room_dim)
        room = pra.ShoeBox(room_dim, fs=FS, materials=pra.Material(e_abs), max_order=max_order)
    else:
        room = pra.AnechoicRoom(dim=3, fs=FS)
    room.add_microphone_array(center[:, None] + np.asarray(mics, float).T)
    for pos, sig in zip(sources, signals):
        room.add_source(center + np.asarray(pos, float), signal=sig)
    room.simulate()
    y = room.mic_array.signals[:, : max(len(s) for s in signals)]
    if snr_db is not None:
        rng = np.random.default_rng(seed + 99)
        y = y + rng.standard_normal(y.shape) * np.sqrt(np.mean(y ** 2) / 10 ** (snr_db / 10))
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def source_at(az_deg, el_deg=0.0, dist=2.0):
    az, el = np.deg2rad(az_deg), np.deg2rad(el_deg)
    return dist * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def white(n, seed):
    return np.random.default_rng(seed).standard_normal(n)


def syllables(n, seed, floor=0.0):
    """Talker-like noise: white noise under a 4 Hz syllable envelope (``floor`` keeps it from
    falling silent between syllables)."""
    t = np.arange(n) / FS
    return white(n, seed) * (floor + np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2)


def process_windows(pipe, audio, sample_rate=FS, rate_hz=10.0, t0_ns=1_000_000_000):
    """``Pipeline.process`` on the windows of ``audio`` ``(M, N)``, one every ``1 / rate_hz``
    seconds, stamped from the sample index; the list of outputs."""
    win, step = pipe.window_samples, int(round(sample_rate / rate_hz))
    return [pipe.process(AudioWindow(audio[:, s:s + win],
                                     t0_ns + s * 1_000_000_000 // sample_rate, sample_rate))
            for s in range(0, audio.shape[1] - win + 1, step)]
