"""SpeakerTracker: persistent-ID multi-speaker tracking of DoA / audio-visual detections.

Three small pieces:

* :class:`AngularCVFilter` - Kalman filter, constant velocity on the sphere, one per track.
* :class:`PositionCVFilter` - Kalman filter, constant velocity in 3-D, kept alongside the angular
  one once a detection carries a position (range known, e.g. from the camera).
* :class:`SpeakerTracker` - gating, Hungarian association, birth/death with hysteresis.

Maths
-----
Angles in radians, time in seconds, ``dt`` = time since the previous update.

Angular state ``x = [az, el, az_rate, el_rate]`` (az kept in (-pi, pi]).

Transition: constant velocity while the talker is heard; once a track has heard nothing for
``speaking_hold_s`` its velocity decays with time constant ``tau`` (a silent talker usually
stands still, so a coasting track must not drift away)::

    F = [[I, b I], [0, a I]],   a = exp(-dt_c / tau),   b = dt_u + tau (1 - a)

with ``dt_c`` the part of ``dt`` spent beyond the hold and ``dt_u = dt - dt_c`` (``a = 1,
b = dt`` before: plain constant velocity, so short dropouts and crossings keep the velocity).
At the moment the hold runs out the track also *settles*: its mean goes back to the direction
it had at its last detection and its velocity to 0 - the extrapolation over the hold was built
on a velocity estimated from a few noisy DoA frames, and a talker who stops talking is far more
likely to be standing where they stopped than to keep walking.

Process noise, continuous white acceleration with spectral density ``q``::

    Q = q [[dt^3/3 I, dt^2/2 I], [dt^2/2 I, dt I]],   q = (process_noise_deg_s2 * pi/180)^2

(``process_noise_deg_s2`` = acceleration standard deviation over one second; the azimuth rows
and columns are scaled by ``1/cos(el)``). The covariance therefore keeps growing while a track
coasts, even though its mean has stopped.

Measurement ``z = [az, el]``, ``H = [I 0]``::

    R = diag(s^2 / cos^2(el), s^2) / w,   s = measurement_noise_deg,   w = clip(confidence, 0.25, 1)

(``1/cos(el)``: an error ``s`` on the sphere is a larger azimuth error away from the horizon;
``cos(el)`` is floored at ``cos(85 deg)``). Innovation ``nu = [wrap(az_z - az), el_z - el]``,
``wrap`` to (-pi, pi], so tracks cross +-180 deg without a jump. Update in Joseph form.

Gating: great-circle distance ``d`` between the predicted direction and the detection,
``d <= g_i``, ``g_i = clip(3 sqrt(sigma_i^2 + s^2), gate_deg, max_gate_deg)`` for confirmed
tracks (``sigma_i`` = the track's largest angular standard deviation, tangent plane): the gate
grows with a coasting track's uncertainty but is capped (``max_gate_deg`` = 1.5 x gate_deg by
default). A tentative track gates at ``min(2.5 sqrt(sigma_i^2 + s^2), gate_deg)``: it has no
history to excuse a far detection, and this is what keeps random clutter from lining up.

Cost (negative log-likelihood, tangent plane so azimuth is not over-weighted near the poles):
``nu_t = J nu``, ``J = diag(cos el, 1)``, ``S = J (H P H^T + R) J^T``::

    c_ij = nu_t^T S^-1 nu_t + ln det S

Low-confidence detections (larger ``R``) and very uncertain tracks (larger ``S``) pay through
``ln det S``. The assignment is globally optimal (``scipy.optimize.linear_sum_assignment``):
confirmed tracks first, then tentative tracks on the detections left over, then births from
what is still left. Each assigned pair gets a weight ``p = 1 / (1 + sum_k exp(-delta_k / 2))``
where ``delta_k`` is the extra cost of the alternative in which track ``k`` takes the detection
instead (swapping detections, or leaving this track without one): ``p`` is ~1 for clear-cut
pairs and ~0.5 where two tracks are equally close, e.g. two talkers crossing with one merged
DoA peak. The update then uses ``R / p^2`` so that neither track is dragged onto the other.

3-D state ``x = [x, y, z, vx, vy, vz]`` (metres, array frame), the same ``F``/``Q`` structure
with ``q3 = accel_3d_m_s2^2``, ``H = [I 0]``, and a measurement covariance built from the
bearing ``u``: ``R3 = (s_lat^2 (I - u u^T) + s_r^2 u u^T) / w`` with ``s_lat = r s`` and
``s_r = max(0.05 m, 0.1 r)`` (range is the least certain direction).

Life cycle
----------
* Birth: an unassigned detection with ``confidence >= birth_min_confidence`` that is not within
  ``duplicate_deg`` (= gate_deg / 2) of an existing track opens a *tentative* track (no ID).
* Confirmation: ``birth_hits`` hits among its first ``birth_window`` frames (only detections of
  birth confidence count), else it is deleted - isolated clutter never becomes a track. A
  confirmed track gets the next ID (1, 2, ...: monotonic, restarted only by ``reset``).
* A tentative track within ``duplicate_deg`` of a confirmed one is pruned (no twin tracks).
* Dormancy: a confirmed track with nothing in its gate for 2 frames is dormant. Detections it
  wins are held, not applied, until ``birth_hits`` confident ones fall within ``birth_window``
  frames; then they are applied (after the hold: the angular filter restarts from them). So a
  talker resuming near its old direction gets its old ID back, while clutter inside the grown
  gate of a silent talker's track cannot drag it away. Within the hold, a detection closer than
  2 ``s`` to the prediction is still taken at once (a dropout, not a pause). A detection of a
  *neighbouring* track inside its gate counts as "heard" (its talker may be hidden in the
  neighbour's peak).
* Death: only after ``silence_keep_s`` without any applied detection - never while detections
  keep coming, so no flicker.

Output: confirmed tracks sorted by ID. ``speaking`` = a detection within ``speaking_hold_s``;
``confidence`` = recent hit rate (exponential average over ~1 s) x ``s / sqrt(s^2 +
sigma^2)``, in [0, 1].

Parameters: ``tracker.*`` in ``params.py`` (the constructor takes the full parameter dict;
the defaults live there only).
"""
from __future__ import annotations

import functools
import math
from collections import deque
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from . import kernels
from .types import NS_PER_S, Detection, TrackState, angular_distance_scalar, wrap_angle

_DEG = math.pi / 180.0
_MIN_COS_EL = math.cos(85.0 * _DEG)
_INITIAL_RATE_STD = 15.0 * _DEG  # rad/s, prior on a new track's angular rate
_INITIAL_SPEED_STD = 1.0  # m/s, prior on a new 3-D track's velocity
_HIT_SCORE_TAU_S = 1.0  # time constant of the hit-rate average behind TrackState.confidence
_TENTATIVE_GATE_SIGMAS = 2.5  # gate of a tentative track, in innovation standard deviations
_DORMANT_MISSES = 2  # frames with nothing in the gate after which a track is dormant
_RESUME_SIGMAS = 2.0  # within the hold, a dormant track takes a detection this many s away at once
_INFEASIBLE = 1e9
_ONES_6 = np.ones(6)  # no per-axis process-noise scaling in 3-D


def _wrap(a: float) -> float:
    """Scalar ``types.wrap_angle``: radians to (-pi, pi] (math, not numpy: this runs per track
    per frame)."""
    return a - 2.0 * math.pi * math.ceil((a - math.pi) / (2.0 * math.pi))


def _inv2(a: float, b: float, d: float) -> tuple[float, float, float, float] | None:
    """``(det, i00, i01, i11)`` of the symmetric 2x2 ``[[a, b], [b, d]]``, None if singular."""
    det = a * d - b * b
    if not det != 0.0 or not math.isfinite(det):
        return None
    return det, d / det, -b / det, a / det


def cv_model(dt: float, dt_coast: float, tau: float, q: float, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``F`` and ``Q`` of the (damped while coasting) constant-velocity model, state [pos, vel].

    ``dt_coast`` (<= dt) is the part of ``dt`` during which the velocity decays with time
    constant ``tau``; see the module docstring. Frames come at a fixed rate, so the matrices
    are cached (read-only) by their rounded arguments.
    """
    dt_coast = min(max(dt_coast, 0.0), dt)
    return _cv_model_cached(round(dt, 9), round(dt_coast, 9), tau, q, dim)


@functools.lru_cache(maxsize=256)
def _cv_model_cached(dt: float, dt_coast: float, tau: float, q: float,
                     dim: int) -> tuple[np.ndarray, np.ndarray]:
    a = math.exp(-dt_coast / tau) if tau > 0 else 0.0
    b = (dt - dt_coast) + tau * (1.0 - a)
    eye = np.eye(dim)
    F = np.block([[eye, b * eye], [np.zeros((dim, dim)), a * eye]])
    Q = q * np.block([[dt ** 3 / 3.0 * eye, dt ** 2 / 2.0 * eye], [dt ** 2 / 2.0 * eye, dt * eye]])
    F.flags.writeable = False
    Q.flags.writeable = False
    return F, Q


class AngularCVFilter:
    """Constant-velocity Kalman filter over ``[az, el, az_rate, el_rate]`` (radians)."""

    def __init__(self, azimuth: float, elevation: float, meas_std: float, confidence: float = 1.0):
        self.x = np.array([float(wrap_angle(azimuth)), float(elevation), 0.0, 0.0])
        R = self.measurement_cov(elevation, meas_std, confidence)
        self.P = np.diag([R[0, 0], R[1, 1], _INITIAL_RATE_STD ** 2, _INITIAL_RATE_STD ** 2])

    @property
    def azimuth(self) -> float:
        return float(self.x[0])

    @property
    def elevation(self) -> float:
        return float(self.x[1])

    @staticmethod
    def measurement_cov(elevation: float, meas_std: float, confidence: float) -> np.ndarray:
        c = max(math.cos(elevation), _MIN_COS_EL)
        w = min(max(confidence, 0.25), 1.0)
        return np.array([[(meas_std / c) ** 2 / w, 0.0], [0.0, meas_std ** 2 / w]])

    def predict(self, F: np.ndarray, Q: np.ndarray) -> None:
        """``Q`` is the process noise on the sphere; its azimuth rows/columns are scaled by
        ``1 / cos(el)`` (the same angular acceleration is a larger azimuth acceleration)."""
        c = max(math.cos(self.x[1]), _MIN_COS_EL)
        kernels.kalman_predict(self.x, self.P, F, Q, np.array([1.0 / c, 1.0, 1.0 / c, 1.0]))
        self.x[0] = _wrap(self.x[0])
        self.x[1] = min(max(self.x[1], -0.5 * math.pi), 0.5 * math.pi)

    def innovation(self, azimuth: float, elevation: float) -> np.ndarray:
        return np.array([_wrap(azimuth - self.x[0]), elevation - self.x[1]])

    def angular_std(self) -> float:
        """Largest standard deviation (rad) of the direction on the sphere (tangent plane)."""
        c = max(math.cos(self.x[1]), _MIN_COS_EL)
        a, b, d = c * c * self.P[0, 0], c * self.P[0, 1], self.P[1, 1]  # J P J, J = diag(c, 1)
        largest = 0.5 * (a + d) + math.sqrt(0.25 * (a - d) ** 2 + b * b)  # 2x2 eigenvalue
        return math.sqrt(max(largest, 0.0))

    def cost(self, azimuth: float, elevation: float, R: np.ndarray) -> float:
        """Negative log-likelihood (up to a constant) of the detection, in the tangent plane."""
        # closed form for the 2x2 S = J (P_pos + R) J, J = diag(c, 1) (no numpy per pair)
        x0, x1 = float(self.x[0]), float(self.x[1])
        c = max(math.cos(x1), _MIN_COS_EL)
        n0 = c * _wrap(azimuth - x0)
        n1 = elevation - x1
        P = self.P
        s00 = c * c * (float(P[0, 0]) + float(R[0, 0]))
        s01 = c * (float(P[0, 1]) + float(R[0, 1]))
        s11 = float(P[1, 1]) + float(R[1, 1])
        inv = _inv2(s00, s01, s11)
        if inv is None or inv[0] <= 0.0:  # degenerate covariance: cannot associate
            return _INFEASIBLE
        det, i00, i01, i11 = inv
        return i00 * n0 * n0 + 2.0 * i01 * n0 * n1 + i11 * n1 * n1 + math.log(det)

    def update(self, azimuth: float, elevation: float, R: np.ndarray) -> None:
        kernels.kalman_update(self.x, self.P, self.innovation(azimuth, elevation), R)
        self.x[0] = _wrap(self.x[0])
        self.x[1] = min(max(self.x[1], -0.5 * math.pi), 0.5 * math.pi)


class PositionCVFilter:
    """Constant-velocity Kalman filter over ``[x, y, z, vx, vy, vz]`` (metres, array frame)."""

    def __init__(self, position: np.ndarray, R: np.ndarray):
        self.x = np.concatenate([np.asarray(position, dtype=np.float64), np.zeros(3)])
        self.P = np.zeros((6, 6))
        self.P[:3, :3] = R
        self.P[3:, 3:] = np.eye(3) * _INITIAL_SPEED_STD ** 2

    @staticmethod
    def measurement_cov(position: np.ndarray, meas_std: float, confidence: float) -> np.ndarray:
        r = float(np.linalg.norm(position))
        u = np.asarray(position, dtype=np.float64) / max(r, 1e-6)
        s_lat = max(r * meas_std, 0.01)
        s_r = max(0.05, 0.1 * r)
        uu = np.outer(u, u)
        w = min(max(confidence, 0.25), 1.0)
        return (s_lat ** 2 * (np.eye(3) - uu) + s_r ** 2 * uu) / w

    def predict(self, F: np.ndarray, Q: np.ndarray) -> None:
        kernels.kalman_predict(self.x, self.P, F, Q, _ONES_6)

    def update(self, position: np.ndarray, R: np.ndarray) -> None:
        kernels.kalman_update(self.x, self.P, np.asarray(position, dtype=np.float64) - self.x[:3], R)


class _Track:
    """Book-keeping of one (tentative or confirmed) track."""

    def __init__(self, det: Detection, stamp_ns: int, meas_std: float, birth_window: int, confident: bool):
        self.track_id = 0  # 0 while tentative
        self.angular = AngularCVFilter(det.azimuth, det.elevation, meas_std, det.confidence)
        self.position_filter: PositionCVFilter | None = None
        self.last_position_ns: int | None = None
        self.first_ns = stamp_ns
        self.last_hit_ns = stamp_ns  # last detection used by this track
        self.last_heard_ns = stamp_ns  # last detection inside its gate (its own or a neighbour's)
        self.hits = deque([confident], maxlen=birth_window)  # tentative: confirming hits per frame
        self.frames = 1  # tentative: frames since birth
        self.pending: list[tuple[int, Detection]] = []  # dormant: (frame, detection) not yet applied
        self.hit_mean = self.angular.x[:2].copy()  # direction at the last hit
        self.settled = False  # silent beyond the hold: moved back to hit_mean, velocity zeroed
        self.misses = 0  # consecutive frames with nothing in the gate
        self.hit_score = 0.5

    @property
    def confirmed(self) -> bool:
        return self.track_id > 0


class SpeakerTracker:
    """Multi-speaker tracker with persistent IDs (see the module docstring for the maths)."""

    def __init__(self, params: dict):
        p = params
        self.gate = float(p["tracker.gate_deg"]) * _DEG
        self.max_gate = max(float(p["tracker.max_gate_deg"]) * _DEG, self.gate)
        self.duplicate_dist = 0.5 * self.gate
        self.meas_std = float(p["tracker.measurement_noise_deg"]) * _DEG
        self.resume_dist = _RESUME_SIGMAS * self.meas_std
        self.birth_hits = max(int(p["tracker.birth_hits"]), 1)
        self.birth_window = max(int(p["tracker.birth_window"]), self.birth_hits)
        self.birth_min_conf = float(p["tracker.birth_min_confidence"])
        self.silence_keep_ns = int(float(p["tracker.silence_keep_s"]) * NS_PER_S)
        self.speaking_hold_ns = int(float(p["tracker.speaking_hold_s"]) * NS_PER_S)
        self.coast_tau = float(p["tracker.coast_velocity_tau_s"])
        self.q_ang = (float(p["tracker.process_noise_deg_s2"]) * _DEG) ** 2
        self.q_3d = float(p["tracker.accel_3d_m_s2"]) ** 2
        self.diagnostics: dict[str, int] = {
            "updates": 0, "stale_updates": 0, "invalid_detections": 0, "invalid_positions": 0,
            "ignored_no_voice": 0, "tentative_births": 0, "confirmations": 0, "tentative_deaths": 0,
            "duplicates_pruned": 0, "reacquisitions": 0, "track_deaths": 0, "resets": 0,
        }
        self.reset()
        self.diagnostics["resets"] = 0

    # ------------------------------------------------------------------ public
    def reset(self) -> None:
        """Forget all tracks and the clock; IDs restart at 1. Diagnostics keep counting."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_ns: int | None = None
        self._frame = 0
        self._output: tuple[TrackState, ...] = ()
        self.diagnostics["resets"] += 1

    def update(self, stamp_ns: int, detections: Sequence[Detection],
               voice_active: bool = True) -> tuple[TrackState, ...]:
        """One frame of detections at data time ``stamp_ns``; returns the confirmed tracks by ID."""
        stamp_ns = int(stamp_ns)
        if self._last_ns is not None and stamp_ns <= self._last_ns:  # repeats would count twice
            self.diagnostics["stale_updates"] += 1
            return self._output
        dt = 0.0 if self._last_ns is None else (stamp_ns - self._last_ns) / NS_PER_S
        self._last_ns = stamp_ns
        self._frame += 1
        self.diagnostics["updates"] += 1

        dets = self._valid(detections)
        if not voice_active:  # DoA peaks without voice are noise sources, not talkers
            self.diagnostics["ignored_no_voice"] += len(dets)
            dets = []

        self._predict(stamp_ns, dt)
        self._drop_silent(stamp_ns)

        # Hungarian, confirmed tracks first so a tentative one never steals a talker's detection
        free = list(range(len(dets)))
        matched: dict[int, tuple[Detection, float]] = {}  # id(track) -> (detection, weight)
        heard: list[_Track] = []
        confirmed = [t for t in self._tracks if t.confirmed]
        for group in (confirmed, [t for t in self._tracks if not t.confirmed]):
            pairs, near = self._associate(group, dets, free)
            for ti, dj, weight in pairs:
                matched[id(group[ti])] = (dets[dj], weight)
                free.remove(dj)
            heard += [group[i] for i in near]

        alpha = 1.0 - math.exp(-dt / _HIT_SCORE_TAU_S)
        for track in self._tracks:
            det, weight = matched.get(id(track), (None, 1.0))
            if track.confirmed:
                self._confirmed_step(track, det, weight, stamp_ns)
            else:
                self._tentative_step(track, det, stamp_ns)
            track.hit_score += alpha * (float(track.last_hit_ns == stamp_ns) - track.hit_score)
        for track in self._tracks:
            if track in heard:
                track.last_heard_ns = stamp_ns
                track.misses = 0
            elif track.last_hit_ns != stamp_ns:
                track.misses += 1

        self._prune_duplicates()
        self._resolve_tentatives()
        self._births(stamp_ns, [dets[j] for j in free])
        self._output = tuple(self._state(t, stamp_ns) for t in sorted(
            (t for t in self._tracks if t.confirmed), key=lambda t: t.track_id))
        return self._output

    @property
    def tracks(self) -> tuple[TrackState, ...]:
        """Confirmed tracks as of the last accepted update."""
        return self._output

    # ------------------------------------------------------------------ steps
    def _valid(self, detections: Sequence[Detection]) -> list[Detection]:
        out = []
        for d in detections or ():
            try:
                az, el, conf = float(d.azimuth), float(d.elevation), float(d.confidence)
            except (TypeError, ValueError, AttributeError):
                self.diagnostics["invalid_detections"] += 1
                continue
            if not (math.isfinite(az) and math.isfinite(el) and math.isfinite(conf)) \
                    or abs(el) > 0.5 * math.pi + 1e-9:
                self.diagnostics["invalid_detections"] += 1
                continue
            pos = d.position
            if pos is not None:
                pos = np.asarray(pos, dtype=np.float64).reshape(-1)
                if pos.shape != (3,) or not np.all(np.isfinite(pos)) or np.linalg.norm(pos) < 1e-6:
                    self.diagnostics["invalid_positions"] += 1
                    pos = None
            out.append(Detection(float(wrap_angle(az)), el, min(max(conf, 0.0), 1.0), pos))
        return out

    def _coast_part(self, last_ns: int, stamp_ns: int, dt: float) -> float:
        """Part of the step ``dt`` (s) spent silent beyond the speaking hold: velocity decays."""
        return min(max((stamp_ns - last_ns - self.speaking_hold_ns) / NS_PER_S, 0.0), dt)

    def _predict(self, stamp_ns: int, dt: float) -> None:
        if dt <= 0.0:
            return
        for t in self._tracks:
            if not t.settled and stamp_ns - t.last_heard_ns > self.speaking_hold_ns:
                t.angular.x[:2] = t.hit_mean
                t.angular.x[2:] = 0.0
                t.settled = True
            dt_coast = self._coast_part(t.last_heard_ns, stamp_ns, dt)
            F, Q = cv_model(dt, dt_coast, self.coast_tau, self.q_ang, 2)
            t.angular.predict(F, Q)
            if t.position_filter is not None:
                F3, Q3 = cv_model(dt, self._coast_part(t.last_position_ns, stamp_ns, dt),
                                  self.coast_tau, self.q_3d, 3)
                t.position_filter.predict(F3, Q3)

    def _drop_silent(self, stamp_ns: int) -> None:
        keep = []
        for t in self._tracks:
            if t.confirmed and stamp_ns - t.last_hit_ns > self.silence_keep_ns:
                self.diagnostics["track_deaths"] += 1
                continue
            if t.position_filter is not None and stamp_ns - t.last_position_ns > self.silence_keep_ns:
                t.position_filter = None  # range unknown for too long: stop reporting a position
                t.last_position_ns = None
            keep.append(t)
        self._tracks = keep

    def _gate(self, track: _Track) -> float:
        innovation_std = math.hypot(track.angular.angular_std(), self.meas_std)
        if not track.confirmed:
            return min(_TENTATIVE_GATE_SIGMAS * innovation_std, self.gate)
        return min(max(3.0 * innovation_std, self.gate), self.max_gate)

    def _associate(self, tracks: list[_Track], dets: list[Detection],
                   free: list[int]) -> tuple[list[tuple[int, int, float]], list[int]]:
        """Hungarian assignment on the gated cost.

        Returns the pairs (track index, detection index, weight) and the indices of the tracks
        that have another track's detection inside their gate. ``weight`` in (0, 1] approximates
        the probability that the pair is right, against each single alternative in which another
        track takes the detection (module docstring); ambiguous pairs are applied softly.
        """
        if not tracks or not free:
            return [], []
        az = [dets[j].azimuth for j in free]
        el = [dets[j].elevation for j in free]
        Rs = [AngularCVFilter.measurement_cov(dets[j].elevation, self.meas_std, dets[j].confidence)
              for j in free]
        cost = np.full((len(tracks), len(free)), _INFEASIBLE)
        for i, t in enumerate(tracks):
            t_az, t_el = t.angular.azimuth, t.angular.elevation
            gate = self._gate(t)
            for k in range(len(free)):
                if angular_distance_scalar(t_az, t_el, az[k], el[k]) <= gate:
                    cost[i, k] = t.angular.cost(az[k], el[k], Rs[k])
        if cost.shape[0] == 1:  # one track: the optimal assignment is its cheapest detection
            rows, cols = [0], [int(np.argmin(cost[0]))]
        elif cost.shape[1] == 1:
            rows, cols = [int(np.argmin(cost[:, 0]))], [0]
        else:
            rows, cols = linear_sum_assignment(cost)
        pairs = {int(r): int(c) for r, c in zip(rows, cols) if cost[r, c] < _INFEASIBLE}
        out = []
        for r, c in pairs.items():
            # alternatives: another track k takes detection c, and r takes k's detection (or none)
            odds = 0.0
            for k in range(len(tracks)):
                if k == r or cost[k, c] >= _INFEASIBLE:
                    continue
                ck = pairs.get(k)
                if ck is None:
                    delta = cost[k, c] - cost[r, c]
                elif cost[r, ck] < _INFEASIBLE:
                    delta = cost[k, c] + cost[r, ck] - cost[r, c] - cost[k, ck]
                else:
                    continue
                odds += math.exp(-min(max(delta, -50.0), 50.0) / 2.0)
            out.append((r, free[c], 1.0 / (1.0 + odds)))
        # tracks with a neighbour's detection inside their gate: their talker may be merged with
        # the neighbour's peak rather than silent
        near = [i for i in range(len(tracks))
                if any(cost[i, c] < _INFEASIBLE for r, c in pairs.items() if r != i)]
        return out, near

    def _correct(self, track: _Track, det: Detection, stamp_ns: int, weight: float = 1.0) -> None:
        R = AngularCVFilter.measurement_cov(det.elevation, self.meas_std, det.confidence) / weight ** 2
        track.angular.update(det.azimuth, det.elevation, R)
        self._correct_position(track, det, stamp_ns)
        self._mark_hit(track, stamp_ns)

    def _correct_position(self, track: _Track, det: Detection, stamp_ns: int) -> None:
        if det.position is None:
            return
        R3 = PositionCVFilter.measurement_cov(det.position, self.meas_std, det.confidence)
        if track.position_filter is None:
            track.position_filter = PositionCVFilter(det.position, R3)
        else:
            track.position_filter.update(det.position, R3)
        track.last_position_ns = stamp_ns

    @staticmethod
    def _mark_hit(track: _Track, stamp_ns: int) -> None:
        track.last_hit_ns = track.last_heard_ns = stamp_ns
        track.hit_mean = track.angular.x[:2].copy()
        track.settled = False
        track.misses = 0
        track.pending = []

    def _confirmed_step(self, track: _Track, det: Detection | None, weight: float, stamp_ns: int) -> None:
        """A track that is being heard takes its detection. A dormant one (``_DORMANT_MISSES``
        frames with nothing in its gate) wakes only on ``birth_hits`` confident detections within
        ``birth_window`` frames, so clutter in its gate cannot drag it away while its talker is
        silent; the detections held meanwhile are applied on waking."""
        if det is not None and (track.misses < _DORMANT_MISSES or (
                not track.settled and angular_distance_scalar(
                    track.angular.azimuth, track.angular.elevation,
                    det.azimuth, det.elevation) <= self.resume_dist)):
            self._correct(track, det, stamp_ns, weight)
            return
        track.pending = [(k, d) for k, d in track.pending if self._frame - k < self.birth_window]
        if det is None:
            return
        track.pending.append((self._frame, det))
        if sum(d.confidence >= self.birth_min_conf for _, d in track.pending) < self.birth_hits:
            return
        held = [d for _, d in track.pending]
        if track.settled:
            # silent beyond the hold: its velocity was zeroed and its covariance is large,
            # so restart the angular filter from the held detections
            first = held[0]
            track.angular = AngularCVFilter(first.azimuth, first.elevation, self.meas_std, first.confidence)
            held_angular = held[1:]
        else:
            held_angular = held
        for d in held_angular:
            track.angular.update(d.azimuth, d.elevation,
                                 AngularCVFilter.measurement_cov(d.elevation, self.meas_std, d.confidence))
        for d in held:
            self._correct_position(track, d, stamp_ns)
        self._mark_hit(track, stamp_ns)
        self.diagnostics["reacquisitions"] += 1

    def _tentative_step(self, track: _Track, det: Detection | None, stamp_ns: int) -> None:
        if det is not None:
            self._correct(track, det, stamp_ns)
        track.frames += 1
        track.hits.append(det is not None and det.confidence >= self.birth_min_conf)

    def _resolve_tentatives(self) -> None:
        """Confirm (next ID) or delete tentative tracks: ``birth_hits`` in ``birth_window`` frames."""
        keep = []
        for t in self._tracks:
            if not t.confirmed:
                if sum(t.hits) >= self.birth_hits:
                    t.track_id = self._next_id
                    self._next_id += 1
                    self.diagnostics["confirmations"] += 1
                elif t.frames >= self.birth_window:
                    self.diagnostics["tentative_deaths"] += 1
                    continue
            keep.append(t)
        self._tracks = keep

    def _births(self, stamp_ns: int, dets: list[Detection]) -> None:
        for d in sorted(dets, key=lambda d: -d.confidence):
            if d.confidence < self.birth_min_conf:
                continue
            if any(angular_distance_scalar(t.angular.azimuth, t.angular.elevation,
                                           d.azimuth, d.elevation) < self.duplicate_dist
                   for t in self._tracks):
                continue
            track = _Track(d, stamp_ns, self.meas_std, self.birth_window, True)
            if d.position is not None:
                track.position_filter = PositionCVFilter(
                    d.position, PositionCVFilter.measurement_cov(d.position, self.meas_std, d.confidence))
                track.last_position_ns = stamp_ns
            self._tracks.append(track)
            self.diagnostics["tentative_births"] += 1
        if self.birth_hits <= 1:
            self._resolve_tentatives()

    def _prune_duplicates(self) -> None:
        confirmed = [t for t in self._tracks if t.confirmed]
        keep = []
        for t in self._tracks:
            if not t.confirmed and any(
                    angular_distance_scalar(t.angular.azimuth, t.angular.elevation,
                                            c.angular.azimuth, c.angular.elevation)
                    < self.duplicate_dist
                    for c in confirmed):
                self.diagnostics["duplicates_pruned"] += 1
                continue
            keep.append(t)
        self._tracks = keep

    def _state(self, t: _Track, stamp_ns: int) -> TrackState:
        f = t.angular
        sigma = f.angular_std()
        confidence = t.hit_score * self.meas_std / math.hypot(self.meas_std, sigma)
        pos = pcov = None
        if t.position_filter is not None:
            pos = t.position_filter.x[:3].copy()
            pcov = t.position_filter.P[:3, :3].copy()
        return TrackState(
            track_id=t.track_id,
            azimuth=float(f.x[0]), elevation=float(f.x[1]),
            azimuth_rate=float(f.x[2]), elevation_rate=float(f.x[3]),
            covariance=f.P.copy(),
            confidence=float(min(max(confidence, 0.0), 1.0)),
            speaking=stamp_ns - t.last_hit_ns <= self.speaking_hold_ns,
            age_s=(stamp_ns - t.first_ns) / NS_PER_S,
            position=pos, position_covariance=pcov,
        )
