"""Scene generators for the acceptance sets and the demo.

``make_scenario(kind, seed)`` is a pure function of ``(kind, seed)`` (plus the optional speech /
noise folders, which only change the source signals): a training set and a test set of the same
kind differ by their seeds only (e.g. train = seeds 0..999, test = seeds 100000..100099).

Kinds
    ``static1``  one static talker 1-3 m from the array at a uniformly random azimuth (full
                 circle), head height 1.1-1.8 m; room U(4,8) x U(3,7) x U(2.5,3.5) m,
                 RT60 U(0.2, 0.9) s, SNR U(5, 30) dB, 4-6 s.
    ``overlap2`` two static talkers (>= 40 deg apart in azimuth) speaking simultaneously most of
                 the time; same room/RT60/SNR distributions, 5-8 s.
    ``moving3``  three talkers walking piecewise-linear paths at <= 0.5 m/s (legs of 1.5-4 s,
                 30 % of them standing still), >= 0.6 m apart and from the array, taking turns
                 of 1.2-3 s separated by -0.4 (overlap) to 0.5 s; 10-15 s.
    ``demo``     fixed 8 s scene: 6 x 5 x 3 m room, RT60 0.4 s, SNR 20 dB, two talkers taking
                 turns, one static at -30 deg and one walking across the camera's view.
"""
from __future__ import annotations

import numpy as np

from .scene import MIN_WALL_DISTANCE_M, SceneConfig, TalkerConfig, validate_config

SCENARIO_KINDS = ("static1", "overlap2", "moving3", "demo")
_KIND_CODE = {"static1": 1, "overlap2": 2, "moving3": 3, "demo": 4}
_MARGIN = MIN_WALL_DISTANCE_M + 0.05
MAX_SPEED_M_S = 0.49  # walking speed drawn up to this (< 0.5 m/s after rounding)
_MAX_TRIES = 1000


def _random_room(rng):
    dim = np.array([rng.uniform(4, 8), rng.uniform(3, 7), rng.uniform(2.5, 3.5)])
    array_z = rng.uniform(0.8, 1.3)
    # Array anywhere at least 1 m from the walls.
    array_xy = np.array([rng.uniform(1.0, dim[0] - 1.0), rng.uniform(1.0, dim[1] - 1.0)])
    return dim, np.array([array_xy[0], array_xy[1], array_z])


def _inside(p_array, dim, array_pos, margin=_MARGIN) -> bool:
    q = np.asarray(p_array) + array_pos
    return bool(np.all(q >= margin) and np.all(q <= dim - margin))


def _head_height(rng, dim):
    return min(rng.uniform(1.1, 1.8), dim[2] - _MARGIN)


def _static_position(rng, dim, array_pos, d_range=(1.0, 3.0)):
    """A head position (array frame) at a 3-D distance in ``d_range`` and a uniformly random
    azimuth, inside the room with margin; None if 200 draws fail."""
    for _ in range(200):
        a = rng.uniform(-np.pi, np.pi)
        dz = _head_height(rng, dim) - array_pos[2]
        d = rng.uniform(*d_range)
        if d < abs(dz) + 0.3:
            continue
        r = np.sqrt(d * d - dz * dz)
        p = np.array([r * np.cos(a), r * np.sin(a), dz])
        if _inside(p, dim, array_pos):
            return p
    return None


def _az_diff(a, b):
    return abs((a - b + np.pi) % (2 * np.pi) - np.pi)


def _base_config(kind, seed, rng, dim, array_pos, duration, speech_dir, noise_dir):
    return SceneConfig(
        room_dim=tuple(float(v) for v in dim), rt60_s=float(rng.uniform(0.2, 0.9)),
        snr_db=float(rng.uniform(5.0, 30.0)), array_position=tuple(float(v) for v in array_pos),
        duration_s=float(round(duration, 3)), seed=int(seed), speech_dir=speech_dir,
        noise_recording=noise_dir, name=f"{kind}_{seed}")


def _round_wp(t, p):
    return (float(round(t, 4)), *(float(round(v, 4)) for v in p))


def _static1(rng, seed, speech_dir, noise_dir):
    for _ in range(_MAX_TRIES):
        dim, arr = _random_room(rng)
        p = _static_position(rng, dim, arr)
        if p is not None:
            break
    else:
        raise RuntimeError("static1: no valid layout found")
    duration = rng.uniform(4.0, 6.0)
    a, b = rng.uniform(0.2, 0.8), duration - rng.uniform(0.1, 0.6)
    speaking = [(a, b)]
    if rng.random() < 0.5:  # one pause
        mid = rng.uniform(a + 1.0, b - 1.0)
        gap = rng.uniform(0.3, 0.8)
        speaking = [(a, mid), (mid + gap, b)]
    cfg = _base_config("static1", seed, rng, dim, arr, duration, speech_dir, noise_dir)
    cfg.talkers = [TalkerConfig(waypoints=[_round_wp(0.0, p)],
                                speaking=[(round(x, 3), round(y, 3)) for x, y in speaking],
                                talker_id=1)]
    return cfg


def _overlap2(rng, seed, speech_dir, noise_dir):
    for _ in range(_MAX_TRIES):
        dim, arr = _random_room(rng)
        p1 = _static_position(rng, dim, arr)
        if p1 is None:
            continue
        az1 = np.arctan2(p1[1], p1[0])
        for _ in range(50):
            p2 = _static_position(rng, dim, arr)
            if (p2 is not None and _az_diff(az1, np.arctan2(p2[1], p2[0])) >= np.deg2rad(40)
                    and np.linalg.norm(p1 - p2) > 0.6):
                break
        else:
            continue
        break
    else:
        raise RuntimeError("overlap2: no valid layout found")
    duration = rng.uniform(5.0, 8.0)
    talkers = []
    for i, p in enumerate((p1, p2)):
        a, b = rng.uniform(0.1, 0.7), duration - rng.uniform(0.1, 0.7)
        sp = [(a, b)]
        if rng.random() < 0.5:
            mid = rng.uniform(a + 1.0, b - 1.0)
            sp = [(a, mid), (mid + rng.uniform(0.3, 0.7), b)]
        talkers.append(TalkerConfig(waypoints=[_round_wp(0.0, p)],
                                    speaking=[(round(x, 3), round(y, 3)) for x, y in sp],
                                    talker_id=i + 1))
    cfg = _base_config("overlap2", seed, rng, dim, arr, duration, speech_dir, noise_dir)
    cfg.talkers = talkers
    return cfg


def _trajectory(rng, dim, arr, start, duration):
    """Waypoints [(t, x, y, z)]: legs of 1.5-4 s, walking at <= 0.5 m/s or standing still."""
    wps = [_round_wp(0.0, start)]
    p, t = start.copy(), 0.0
    while t < duration:
        dt = rng.uniform(1.5, 4.0)
        q = p
        if rng.random() > 0.3:
            for _ in range(30):
                ang = rng.uniform(-np.pi, np.pi)
                step = rng.uniform(0.15, MAX_SPEED_M_S) * dt
                cand = p + step * np.array([np.cos(ang), np.sin(ang), 0.0])
                if _inside(cand, dim, arr) and 0.8 <= np.hypot(cand[0], cand[1]) <= 3.5:
                    q = cand
                    break
        t += dt
        wps.append(_round_wp(t, q))
        p = q
    return wps


def _turns(rng, duration, n_talkers=3):
    """Speaking intervals: turns of 1.2-3 s, gaps of -0.4 (overlap) .. 0.5 s."""
    turns = [[] for _ in range(n_talkers)]
    order = list(rng.permutation(n_talkers))
    t = rng.uniform(0.2, 0.6)
    last = None
    while t < duration - 0.5:
        who = order.pop(0) if order else int(rng.choice([k for k in range(n_talkers)
                                                          if k != last]))
        end = min(t + rng.uniform(1.2, 3.0), duration - 0.05)
        turns[who].append((round(t, 3), round(end, 3)))
        last = who
        t = end + rng.uniform(-0.4, 0.5)
    # Merge a talker's touching/overlapping turns.
    out = []
    for iv in turns:
        merged = []
        for a, b in sorted(iv):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        out.append(merged)
    return out


def _moving3(rng, seed, speech_dir, noise_dir):
    duration = rng.uniform(10.0, 15.0)
    for _ in range(_MAX_TRIES):
        dim, arr = _random_room(rng)
        starts = []
        for _ in range(3):
            for _ in range(50):
                p = _static_position(rng, dim, arr, d_range=(1.0, 3.0))
                if p is not None and all(np.linalg.norm(p - s) > 0.8 for s in starts):
                    starts.append(p)
                    break
        if len(starts) < 3:
            continue
        talkers = [TalkerConfig(waypoints=_trajectory(rng, dim, arr, s, duration), talker_id=i + 1)
                   for i, s in enumerate(starts)]
        tt = np.linspace(0.0, duration, 400)
        tr = [tk.position(tt) for tk in talkers]
        close = min(np.min(np.linalg.norm(tr[i] - tr[j], axis=1))
                    for i in range(3) for j in range(i + 1, 3))
        near = min(np.min(np.linalg.norm(x, axis=1)) for x in tr)
        if close > 0.6 and near > 0.6:
            break
    else:
        raise RuntimeError("moving3: no valid layout found")
    for tk, sp in zip(talkers, _turns(rng, duration)):
        tk.speaking = sp
    cfg = _base_config("moving3", seed, rng, dim, arr, duration, speech_dir, noise_dir)
    cfg.talkers = talkers
    return cfg


def _demo(seed, speech_dir, noise_dir):
    return SceneConfig(
        room_dim=(6.0, 5.0, 3.0), rt60_s=0.4, snr_db=20.0, array_position=(1.0, 2.5, 1.1),
        duration_s=8.0, seed=int(seed), speech_dir=speech_dir, noise_recording=noise_dir,
        name=f"demo_{seed}",
        talkers=[
            # Static talker at azimuth -30 deg, 3 m, in the camera's view (hfov 70 deg).
            TalkerConfig(waypoints=[(0.0, 2.6, -1.5, 0.4)],
                         speaking=[(3.0, 5.3)], talker_id=1),
            # Walker crossing the view from the left (az 42 deg) to -17 deg at 0.3 m/s.
            TalkerConfig(waypoints=[(0.0, 2.0, 1.8, 0.5), (8.0, 2.0, -0.6, 0.5)],
                         speaking=[(0.4, 2.8), (5.1, 7.7)], talker_id=2),
        ])


def make_scenario(kind: str, seed: int, speech_dir: str | None = None,
                  noise_dir: str | None = None) -> SceneConfig:
    """A validated ``SceneConfig`` of the given kind, deterministic in ``(kind, seed)``.

    ``speech_dir``: folder of real speech (None: AVLOC_SPEECH_DIR or the shipped clips);
    ``noise_dir``: file/folder of real noise for the diffuse field (None: pink Gaussian).
    """
    if kind not in _KIND_CODE:
        raise ValueError(f"unknown scenario kind {kind!r}; known: {SCENARIO_KINDS}")
    speech_dir = None if speech_dir is None else str(speech_dir)
    noise_dir = None if noise_dir is None else str(noise_dir)
    if kind == "demo":
        cfg = _demo(seed, speech_dir, noise_dir)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), _KIND_CODE[kind]]))
        cfg = {"static1": _static1, "overlap2": _overlap2, "moving3": _moving3}[kind](
            rng, seed, speech_dir, noise_dir)
    validate_config(cfg)
    return cfg
