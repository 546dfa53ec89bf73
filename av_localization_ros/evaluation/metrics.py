"""Localization and tracking measures: pure functions over estimates and ground truth.

Inputs are a list of :class:`FrameEstimate` (what the pipeline said at each step) and a list of
:class:`~av_localization_ros.evaluation.ground_truth.GroundTruthSample`. Each estimate frame is
paired with the ground-truth sample nearest in stamp; frames with no sample within
``tolerance_s`` (default 60 ms) are skipped and reported as ``n_skipped_frames``. Only *active*
ground-truth speakers (``SpeakerTruth.active``) are targets.

Angles in the returned dictionaries are degrees. ``azimuth_only=True`` (the default everywhere)
measures every distance as the wrapped azimuth difference, which is what a planar array can
resolve; ``azimuth_only=False`` uses the great-circle angle between directions.

Measures:

* :func:`doa_accuracy` - DoA peaks vs. sources: azimuth/elevation MAE, ACC@threshold, miss rate.
* :func:`locata_metrics` - the LOCATA challenge tracking measures (Evers et al., "The LOCATA
  Challenge: Acoustic Source Localization and Tracking", IEEE/ACM TASLP 28, 2020): MAE,
  probability of detection, false-track rate, track swaps, fragmentations, track latency, OSPA.
* :func:`mot_metrics` - CLEAR-MOT / identity measures through ``motmetrics``.
* :func:`evaluate` - all of the above as one JSON-able dictionary (NaN -> None).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from av_localization_ros.core.types import (
    NS_PER_S,
    DoaPeak,
    PipelineOutput,
    TrackState,
    angular_distance,
    wrap_angle,
)
from av_localization_ros.evaluation.ground_truth import GroundTruthSample, SpeakerTruth

DEFAULT_TOLERANCE_S = 0.06

__all__ = [
    "FrameEstimate",
    "match_truth",
    "direction_distances_deg",
    "ospa",
    "doa_accuracy",
    "locata_metrics",
    "mot_metrics",
    "vad_metrics",
    "evaluate",
    "to_jsonable",
    "flatten_metrics",
]


@dataclass(frozen=True)
class FrameEstimate:
    """What the system reported for one step (one audio window)."""

    stamp_ns: int
    peaks: tuple[DoaPeak, ...] = ()
    tracks: tuple[TrackState, ...] = ()
    voice_active: bool = False

    @classmethod
    def from_output(cls, out: PipelineOutput) -> "FrameEstimate":
        """The evaluation view of a :class:`PipelineOutput`."""
        return cls(stamp_ns=int(out.stamp_ns), peaks=tuple(out.doa.peaks),
                   tracks=tuple(out.tracks), voice_active=bool(out.doa.voice_active))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def match_truth(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample],
                tolerance_s: float = DEFAULT_TOLERANCE_S
                ) -> tuple[list[tuple[FrameEstimate, GroundTruthSample]], int]:
    """Pair each estimate (sorted by stamp) with the nearest-in-time ground-truth sample.

    Returns ``(pairs, n_skipped)``; an estimate whose nearest sample is more than
    ``tolerance_s`` away is skipped. Ties go to the earlier sample. Of several samples with the
    same stamp (e.g. an extra sample at a talk start on a regular one) the last one given wins.
    """
    ests = sorted(estimates, key=lambda e: e.stamp_ns)
    if not truth:
        return [], len(ests)
    by_stamp = {g.stamp_ns: g for g in sorted(truth, key=lambda g: g.stamp_ns)}  # stable: last wins
    gts = list(by_stamp.values())
    stamps = np.array([g.stamp_ns for g in gts], dtype=np.int64)
    tol_ns = int(round(tolerance_s * NS_PER_S))
    pairs: list[tuple[FrameEstimate, GroundTruthSample]] = []
    skipped = 0
    for e in ests:
        k = int(np.searchsorted(stamps, e.stamp_ns))
        best, best_dt = None, None
        for j in (k - 1, k):
            if 0 <= j < len(gts):
                dt = abs(int(stamps[j]) - int(e.stamp_ns))
                if best_dt is None or dt < best_dt:
                    best, best_dt = j, dt
        if best is None or best_dt > tol_ns:
            skipped += 1
            continue
        pairs.append((e, gts[best]))
    return pairs, skipped


def _active(sample: GroundTruthSample) -> list[SpeakerTruth]:
    return [s for s in sample.speakers if s.active]


def _az_error_deg(az1, az2) -> np.ndarray:
    """Absolute wrapped azimuth difference in degrees, in [0, 180]."""
    return np.abs(np.rad2deg(wrap_angle(np.asarray(az1, float) - np.asarray(az2, float))))


def direction_distances_deg(az1, el1, az2, el2, azimuth_only: bool = True) -> np.ndarray:
    """Pairwise distance matrix ``(len(az1), len(az2))`` in degrees between two direction sets.

    ``azimuth_only``: wrapped absolute azimuth difference; otherwise the great-circle angle.
    """
    a1 = np.asarray(az1, float).reshape(-1, 1)
    e1 = np.asarray(el1, float).reshape(-1, 1)
    a2 = np.asarray(az2, float).reshape(1, -1)
    e2 = np.asarray(el2, float).reshape(1, -1)
    if azimuth_only:
        d = _az_error_deg(a1, a2)
    else:
        d = np.rad2deg(angular_distance(a1, e1, a2, e2))
    return np.broadcast_to(d, (a1.shape[0], a2.shape[1])).astype(float)


def _dist(gt: Sequence[SpeakerTruth], est: Sequence, azimuth_only: bool) -> np.ndarray:
    return direction_distances_deg([g.azimuth for g in gt], [g.elevation for g in gt],
                                   [x.azimuth for x in est], [x.elevation for x in est],
                                   azimuth_only)


def _gated_assignment(d: np.ndarray, gate: float) -> list[tuple[int, int]]:
    """Munkres assignment restricted to pairs with ``d <= gate``.

    Gated-out pairs get a cost larger than any sum of admissible ones, so the solution has the
    largest possible number of admissible pairs and, among those, the least total distance.
    """
    if d.size == 0:
        return []
    ok = d <= gate
    if not ok.any():
        return []
    big = 1.0 + float(gate) * min(d.shape)
    cost = np.where(ok, d, big)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j)) for i, j in zip(rows, cols) if ok[i, j]]


def _select_tracks(tracks: Iterable[TrackState], use_all: bool) -> list[TrackState]:
    return [t for t in tracks if use_all or t.speaking]


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _ratio(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


def _threshold_key(threshold_deg: float) -> str:
    return f"acc_at_{float(threshold_deg):g}"


# --------------------------------------------------------------------------------------------
# OSPA
# --------------------------------------------------------------------------------------------

def ospa(distances: np.ndarray, cutoff: float = 30.0, order: float = 1.0) -> float:
    """OSPA distance (Schuhmacher, Vo & Vo, IEEE TSP 2008) from a pairwise distance matrix.

    For sets ``X = {x_1..x_m}`` and ``Y = {y_1..y_n}`` with ``m <= n`` (otherwise swap them),
    cut-off ``c > 0``, order ``p >= 1`` and ``d_c(x, y) = min(c, d(x, y))``::

        OSPA_p^c(X, Y) = ( (1/n) * ( min_{pi in Pi_n} sum_{i=1..m} d_c(x_i, y_pi(i))^p
                                     + c^p * (n - m) ) )^(1/p)

    where ``Pi_n`` are the injections of ``1..m`` into ``1..n`` (solved with Munkres).
    ``OSPA(empty, empty) = 0`` and ``OSPA(empty, Y) = c`` for non-empty ``Y``.
    ``distances`` is the ``(m, n)`` matrix ``d(x_i, y_j)`` (either orientation).
    """
    d = np.asarray(distances, dtype=float)
    m, n = d.shape
    if m == 0 and n == 0:
        return 0.0
    if m == 0 or n == 0:
        return float(cutoff)
    dc = np.minimum(d, cutoff) ** order
    rows, cols = linear_sum_assignment(dc)
    total = float(dc[rows, cols].sum()) + (cutoff ** order) * abs(m - n)
    return float((total / max(m, n)) ** (1.0 / order))


# --------------------------------------------------------------------------------------------
# DoA accuracy
# --------------------------------------------------------------------------------------------

def doa_accuracy(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample],
                 threshold_deg: float = 10.0, *, azimuth_only: bool = True,
                 tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Accuracy of the per-frame DoA peaks against the active sources.

    The known-number-of-sources protocol (as in LOCATA tasks 1-2 and Qian et al., TASLP 2023):
    on every frame with ``N >= 1`` active sources only the ``N`` most confident peaks count, so
    a system gets no credit for extra peaks that happen to land on a source. Sources and those
    peaks are paired by Hungarian assignment on the azimuth difference (``azimuth_only``) or
    the great-circle angle; there is no gate. For each paired source the wrapped absolute
    azimuth error and the absolute elevation error are recorded. A source left without a peak
    (fewer peaks than sources) is a *miss*: it counts as a 180 deg error for ACC, is left out
    of the MAEs and counts in ``miss_rate``.

    Returns ``azimuth_mae_deg``, ``elevation_mae_deg`` (over paired source-frames),
    ``acc_at_<threshold>`` (fraction of source-frames with azimuth error <= threshold),
    ``n_frames`` (frames with >= 1 active source), ``n_source_frames``, ``miss_rate``,
    ``n_skipped_frames``. Undefined values are NaN.
    """
    pairs, skipped = match_truth(estimates, truth, tolerance_s)
    az_err: list[float] = []
    el_err: list[float] = []
    n_frames = n_src = misses = hits = 0
    for est, sample in pairs:
        act = _active(sample)
        if not act:
            continue
        n_frames += 1
        n_src += len(act)
        peaks = sorted(est.peaks, key=lambda p: -p.confidence)[:len(act)]
        matched = 0
        if peaks:
            rows, cols = linear_sum_assignment(_dist(act, peaks, azimuth_only))
            for i, j in zip(rows, cols):
                ea = float(_az_error_deg(act[i].azimuth, peaks[j].azimuth))
                az_err.append(ea)
                el_err.append(abs(float(np.rad2deg(act[i].elevation - peaks[j].elevation))))
                hits += ea <= threshold_deg
                matched += 1
        misses += len(act) - matched
    return {
        "azimuth_mae_deg": _mean(az_err),
        "elevation_mae_deg": _mean(el_err),
        _threshold_key(threshold_deg): _ratio(hits, n_src),
        "n_frames": n_frames,
        "n_source_frames": n_src,
        "miss_rate": _ratio(misses, n_src),
        "n_skipped_frames": skipped,
    }


# --------------------------------------------------------------------------------------------
# LOCATA tracking measures
# --------------------------------------------------------------------------------------------

def locata_metrics(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample],
                   gate_deg: float = 30.0, ospa_cutoff_deg: float = 30.0,
                   ospa_order: float = 1, *, use_all_tracks: bool = False,
                   azimuth_only: bool = True,
                   tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """The LOCATA tracking measures (Evers et al., IEEE/ACM TASLP 2020).

    Per evaluated frame (estimate with ground truth in tolerance, sorted by stamp), the active
    sources are assigned to the tracks (``speaking`` tracks only unless ``use_all_tracks``) by
    Munkres on the angular distance, gated at ``gate_deg``. Then:

    * ``azimuth_mae_deg`` / ``elevation_mae_deg``: mean absolute (wrapped) error of assigned pairs.
    * ``pd``: probability of detection = assigned source-frames / active source-frames.
    * ``false_track_rate``: tracks not assigned to any source, averaged per evaluated frame
      (frames without active sources included); ``n_false_track_frames`` is the total.
    * ``track_swaps``: number of times a source's assigned track ID differs from the ID it was
      assigned to at its previous assignment (frames where it is unassigned are skipped over).
    * ``fragmentations``: number of times an active source that was assigned on the previous
      evaluated frame (and active there) loses its assignment.
    * ``track_handovers`` (the dual of a swap; not a LOCATA measure): number of times a track
      is assigned to another source than at its previous assignment, i.e. one track ID passes
      from one talker to another - the error that costs IDF1 most when talkers take turns.
      ``handover_separation_deg``: median distance (as all distances here: azimuth, or great
      circle without ``azimuth_only``), at the handover frame, between the source the track
      leaves and the one it takes (NaN without handovers, or when the source it leaves is not
      in that frame's ground truth). Small separations are talkers
      whom the direction alone cannot tell apart; large ones are the tracker's own mistakes.
    * ``track_latency_s``: mean over source activity onsets (first frame, or an inactive ->
      active transition) of the time from the onset to the first frame in that activity period
      where the source is assigned. Undetected periods count their full length, which ends at
      the next evaluated frame after the period (or, at the end of the data, one median frame
      step after its last frame). ``n_onsets`` / ``n_onsets_detected``.
    * ``ospa_deg``: :func:`ospa` between active sources and tracks (all selected tracks, no
      gate) with cut-off ``ospa_cutoff_deg`` and order ``ospa_order``, averaged over all
      evaluated frames; OSPA(empty, empty) = 0.
    """
    pairs, skipped = match_truth(estimates, truth, tolerance_s)
    az_err: list[float] = []
    el_err: list[float] = []
    ospa_vals: list[float] = []
    n_gt = n_assigned = n_false = swaps = frags = handovers = 0
    last_track: dict[int, int] = {}
    last_source: dict[int, int] = {}  # track ID -> source it was assigned to last
    handover_sep: list[float] = []
    prev_assigned: set[int] = set()
    stamps: list[int] = []
    # per frame: {speaker_id: assigned?} for active sources
    status: list[dict[int, bool]] = []
    for est, sample in pairs:
        act = _active(sample)
        trk = _select_tracks(est.tracks, use_all_tracks)
        d = _dist(act, trk, azimuth_only)
        assign = _gated_assignment(d, gate_deg)
        n_gt += len(act)
        n_assigned += len(assign)
        n_false += len(trk) - len(assign)
        ospa_vals.append(ospa(d, ospa_cutoff_deg, ospa_order))
        now_assigned: set[int] = set()
        for i, j in assign:
            sid, tid = act[i].speaker_id, trk[j].track_id
            az_err.append(float(_az_error_deg(act[i].azimuth, trk[j].azimuth)))
            el_err.append(abs(float(np.rad2deg(act[i].elevation - trk[j].elevation))))
            if sid in last_track and last_track[sid] != tid:
                swaps += 1
            last_track[sid] = tid
            if tid in last_source and last_source[tid] != sid:
                handovers += 1
                left = [x for x in sample.speakers if x.speaker_id == last_source[tid]]
                if left:
                    handover_sep.append(float(_dist(left, [act[i]], azimuth_only)[0, 0]))
            last_source[tid] = sid
            now_assigned.add(sid)
        active_ids = {s.speaker_id for s in act}
        frags += len((prev_assigned & active_ids) - now_assigned)
        prev_assigned = now_assigned
        stamps.append(int(est.stamp_ns))
        status.append({sid: sid in now_assigned for sid in active_ids})

    latencies = _onset_latencies(stamps, status)
    return {
        "azimuth_mae_deg": _mean(az_err),
        "elevation_mae_deg": _mean(el_err),
        "pd": _ratio(n_assigned, n_gt),
        "false_track_rate": _ratio(n_false, len(pairs)),
        "n_false_track_frames": n_false,
        "track_swaps": swaps,
        "fragmentations": frags,
        "track_handovers": handovers,
        "handover_separation_deg": float(np.median(handover_sep)) if handover_sep else float("nan"),
        "track_latency_s": _mean([lat for lat, _ in latencies]),
        "n_onsets": len(latencies),
        "n_onsets_detected": sum(1 for _, det in latencies if det),
        "ospa_deg": _mean(ospa_vals),
        "n_frames": len(pairs),
        "n_source_frames": n_gt,
        "n_skipped_frames": skipped,
    }


def _onset_latencies(stamps: list[int], status: list[dict[int, bool]]
                     ) -> list[tuple[float, bool]]:
    """``(latency_s, detected)`` per activity onset; see :func:`locata_metrics`."""
    if not stamps:
        return []
    step_ns = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 0
    ids = sorted({sid for st in status for sid in st})
    out: list[tuple[float, bool]] = []
    n = len(stamps)
    for sid in ids:
        k = 0
        while k < n:
            if sid not in status[k] or (k > 0 and sid in status[k - 1]):
                k += 1
                continue
            onset = k  # active here, inactive (or absent) on the previous frame
            first_hit = None
            while k < n and sid in status[k]:
                if first_hit is None and status[k][sid]:
                    first_hit = k
                k += 1
            if first_hit is not None:
                out.append(((stamps[first_hit] - stamps[onset]) / NS_PER_S, True))
            else:
                end_ns = stamps[k] if k < n else stamps[-1] + step_ns
                out.append(((end_ns - stamps[onset]) / NS_PER_S, False))
    return out


# --------------------------------------------------------------------------------------------
# CLEAR-MOT via motmetrics
# --------------------------------------------------------------------------------------------

_MOT_RATES = ("mota", "motp", "idf1")
_MOT_COUNTS = ("idtp", "idfn", "idfp", "num_switches", "num_false_positives", "num_misses",
               "num_objects")


def mot_metrics(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample],
                max_distance_deg: float = 30.0, *, use_all_tracks: bool = False,
                azimuth_only: bool = True,
                tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """CLEAR-MOT and identity measures through ``motmetrics``.

    One ``MOTAccumulator`` update per evaluated frame: objects = active source IDs,
    hypotheses = speaking track IDs (all tracks with ``use_all_tracks``), distance = angular
    distance in degrees, NaN (not matchable) beyond ``max_distance_deg``. Returns ``mota``
    (1 - (FN + FP + IDSW) / GT), ``motp`` (mean matched distance, degrees), ``idf1`` =
    2 IDTP / (2 IDTP + IDFN + IDFP) with its counts ``idtp``, ``idfn``, ``idfp`` (Ristani et
    al. 2016: the frames matched under the best one-to-one pairing of source and track IDs,
    the source frames and the track frames left out of it), ``num_switches``,
    ``num_false_positives``, ``num_misses``, ``num_objects``, ``n_frames``,
    ``n_skipped_frames``. ``idfn - num_misses`` and ``idfp - num_false_positives`` are the
    frames lost to identity alone (tracked, but under another talker's ID).
    ``mota``/``idf1`` are NaN when there are no objects.
    """
    import motmetrics as mm  # heavy import (pandas); only needed here

    pairs, skipped = match_truth(estimates, truth, tolerance_s)
    acc = mm.MOTAccumulator(auto_id=False)
    for k, (est, sample) in enumerate(pairs):
        act = _active(sample)
        trk = _select_tracks(est.tracks, use_all_tracks)
        d = _dist(act, trk, azimuth_only)
        d = np.where(d <= max_distance_deg, d, np.nan)
        acc.update([s.speaker_id for s in act], [t.track_id for t in trk], d, frameid=k)
    result = {**{f: float("nan") for f in _MOT_RATES}, **{f: 0 for f in _MOT_COUNTS}}
    if pairs:
        summary = mm.metrics.create().compute(acc, metrics=[*_MOT_RATES, *_MOT_COUNTS],
                                              name="all")
        row = summary.loc["all"]
        result.update({f: float(row[f]) for f in _MOT_RATES})
        result.update({f: int(row[f]) for f in _MOT_COUNTS})
        if result["num_objects"] == 0:
            result["mota"] = float("nan")
            result["idf1"] = float("nan")
    result["n_frames"] = len(pairs)
    result["n_skipped_frames"] = skipped
    return result


# --------------------------------------------------------------------------------------------
# voice activity
# --------------------------------------------------------------------------------------------

def vad_metrics(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample], *,
                tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """Frame-level voice activity: ``voice_active`` vs. "any ground-truth speaker active"."""
    pairs, skipped = match_truth(estimates, truth, tolerance_s)
    tp = fp = fn = tn = 0
    for est, sample in pairs:
        ref = bool(_active(sample))
        hyp = bool(est.voice_active)
        tp += ref and hyp
        fp += hyp and not ref
        fn += ref and not hyp
        tn += not ref and not hyp
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {"accuracy": _ratio(tp + tn, len(pairs)), "precision": precision,
            "recall": recall, "f1": f1, "n_frames": len(pairs), "n_skipped_frames": skipped}


# --------------------------------------------------------------------------------------------
# everything together
# --------------------------------------------------------------------------------------------

def evaluate(estimates: Sequence[FrameEstimate], truth: Sequence[GroundTruthSample], *,
             threshold_deg: float = 10.0, gate_deg: float = 30.0,
             ospa_cutoff_deg: float = 30.0, ospa_order: float = 1,
             max_distance_deg: float = 30.0, use_all_tracks: bool = False,
             azimuth_only: bool = True, tolerance_s: float = DEFAULT_TOLERANCE_S) -> dict:
    """All measures as one JSON-able dict (plain floats/ints, NaN -> None)::

        {"doa": doa_accuracy(...), "locata": locata_metrics(...), "mot": mot_metrics(...),
         "vad": vad_metrics(...), "n_estimates": .., "n_truth_samples": .., "config": {...}}
    """
    result = {
        "doa": doa_accuracy(estimates, truth, threshold_deg, azimuth_only=azimuth_only,
                            tolerance_s=tolerance_s),
        "locata": locata_metrics(estimates, truth, gate_deg, ospa_cutoff_deg, ospa_order,
                                 use_all_tracks=use_all_tracks, azimuth_only=azimuth_only,
                                 tolerance_s=tolerance_s),
        "mot": mot_metrics(estimates, truth, max_distance_deg, use_all_tracks=use_all_tracks,
                           azimuth_only=azimuth_only, tolerance_s=tolerance_s),
        "vad": vad_metrics(estimates, truth, tolerance_s=tolerance_s),
        "n_estimates": len(estimates),
        "n_truth_samples": len(truth),
        "config": {
            "threshold_deg": threshold_deg, "gate_deg": gate_deg,
            "ospa_cutoff_deg": ospa_cutoff_deg, "ospa_order": ospa_order,
            "max_distance_deg": max_distance_deg, "use_all_tracks": use_all_tracks,
            "azimuth_only": azimuth_only, "tolerance_s": tolerance_s,
        },
    }
    return to_jsonable(result)


def to_jsonable(obj):
    """Recursively turn numpy scalars/arrays into plain Python; NaN and +-inf become None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    return obj


def flatten_metrics(d: dict, prefix: str = "") -> dict:
    """``{"doa": {"azimuth_mae_deg": 1}}`` -> ``{"doa.azimuth_mae_deg": 1}`` (for tables)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_metrics(v, key + "."))
        else:
            out[key] = v
    return out
