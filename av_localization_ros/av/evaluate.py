"""Held-out evaluation of a checkpoint (torch) or of the shipped ONNX models (runtime).

    python -m av_localization_ros.av.evaluate --checkpoint out/av_train/latest.pt [--n 600]
    python -m av_localization_ros.av.evaluate --onnx models/ [--n 600]

The held-out synthetic set (``data.SyntheticAV(split="heldout")``: disjoint seeds, unseen
background families, different placement) mixes sounding pairs with silent and off-screen
pairs (15% each). cIoU@0.5 (AP50) and AUC use the sounding pairs, the SLAVC silent-pair AP and
max-F1 use all pairs. Baselines: a centre prior (Gaussian at the image centre, confidence =
constant, so its silent AP is that of chance) and an untrained network (same architecture,
ImageNet trunk, random head and audio encoder).
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from . import metrics as M
from .audio_features import log_mel
from .data import SyntheticAV


def heldout_set(n: int, image_size: int, p_silent=0.15, p_offscreen=0.15, seed: int = 0):
    return SyntheticAV(n_samples=n, split="heldout", image_size=image_size, seed=seed,
                       p_silent=p_silent, p_offscreen=p_offscreen)


def score_maps(cos_maps, confs, samples) -> dict:
    ev = M.Evaluator()
    for m, c, s in zip(cos_maps, confs, samples):
        ev.add(m, s["boxes"], c)
    return ev.summary()


@torch.no_grad()
def torch_cos_maps(model, samples, feats=None, batch=32):
    from .train import image_tensor
    size = model.cfg.input_size
    out = []
    for i0 in range(0, len(samples), batch):
        chunk = samples[i0:i0 + batch]
        x = torch.stack([image_tensor(s["image"], size) for s in chunk])
        mel = torch.stack([torch.from_numpy(log_mel(s["audio"]))[None] for s in chunk])
        f = feats[i0:i0 + batch] if feats is not None else model.image_encoder.features(x)
        v = model.image_encoder.head(f)
        a = model.audio_encoder(mel)
        out.extend(torch.einsum("bchw,bc->bhw", v, a).numpy())
    return out


def confidences(cos_maps):
    return [M.slavc_confidence(M.upsample_map(m)) for m in cos_maps]


def evaluate_checkpoint(ckpt, n: int = 600, seed: int = 0) -> dict:
    from .model import AVModel
    from .train import image_tensor, load_checkpoint
    torch.set_num_threads(2)
    model = load_checkpoint(ckpt)
    size = model.cfg.input_size
    ds = heldout_set(n, size[0], seed=seed)
    samples = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        feats = torch.cat([model.image_encoder.features(
            torch.stack([image_tensor(s["image"], size) for s in samples[i:i + 32]]))
            for i in range(0, len(samples), 32)])
    res = {}
    maps = torch_cos_maps(model, samples, feats)
    res["trained"] = score_maps(maps, confidences(maps), samples)
    torch.manual_seed(1234)
    cfg = model.cfg
    cfg_u = type(cfg)(**{**cfg.__dict__, "pretrained": True})
    untrained = AVModel(cfg_u).eval()
    umaps = torch_cos_maps(untrained, samples, feats if cfg.backbone == "efficientnet_lite0" else None)
    res["untrained"] = score_maps(umaps, confidences(umaps), samples)
    prior = M.centre_prior_map()
    res["centre_prior"] = score_maps([prior] * len(samples), [0.5] * len(samples), samples)
    # calibration constants come from a separate *training-split* set (never the test set)
    cal_ds = SyntheticAV(n_samples=200, split="train", image_size=size[0], seed=seed + 4242,
                         p_silent=0.25, p_offscreen=0.25)
    cal_samples = [cal_ds[i] for i in range(len(cal_ds))]
    res["calibration"] = calibrate(torch_cos_maps(model, cal_samples), cal_samples)
    res["heldout"] = {"n": n, "seed": seed, "split": "heldout", "p_silent": 0.15,
                      "p_offscreen": 0.15, "image_size": list(size)}
    return res


def calibrate(cos_maps, samples) -> dict:
    """Display / confidence scaling constants (stored in av_model.json by export.py).

    ``cos_lo``/``cos_hi``: 5th / 99.5th percentile of cosine values on sounding pairs -> heatmap
    0..1. ``conf_lo``/``conf_hi``: median SLAVC score of silent+off-screen / sounding pairs ->
    confidence 0..1 (clipped).
    """
    snd = [m for m, s in zip(cos_maps, samples) if s["kind"] == "sounding"]
    allv = np.concatenate([m.ravel() for m in snd])
    conf = confidences(cos_maps)
    cs = [c for c, s in zip(conf, samples) if s["kind"] == "sounding"]
    cq = [c for c, s in zip(conf, samples) if s["kind"] != "sounding"] or [min(cs)]
    return {"cos_lo": float(np.percentile(allv, 5)), "cos_hi": float(np.percentile(allv, 99.5)),
            "conf_lo": float(np.median(cq)), "conf_hi": float(np.median(cs))}


def evaluate_runtime(model_dir=None, n: int = 600, seed: int = 0, backend="onnxruntime",
                     dataset=None) -> dict:
    """Same protocol through HeatmapRunner (what the Pipeline runs); ``dataset`` defaults to
    the held-out synthetic set (any data.py dataset works, e.g. ``SimSceneAV``)."""
    from ..core.types import AudioWindow
    from .runtime import HeatmapRunner
    r = HeatmapRunner(model_dir, backend=backend)
    ds = dataset if dataset is not None else heldout_set(n, r.input_size[0], seed=seed)
    maps, confs, samples = [], [], []
    for i in range(len(ds)):
        s = ds[i]
        r.set_audio(AudioWindow(s["audio"][None], stamp_ns=i * 10**9, sample_rate=16000))
        cos = r.cos_map(s["image"])
        maps.append(cos)
        confs.append(M.slavc_confidence(M.upsample_map(cos)))
        samples.append(s)
    return score_maps(maps, confs, samples)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--onnx", help="model dir with the exported graphs")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="write the JSON here too (input of export --metrics)")
    ap.add_argument("--sim", nargs="*", metavar="KIND",
                    help="with --onnx: evaluate on simulator scenarios (static1 overlap2 ...) "
                         "for seeds --sim-seed0..--sim-seed0+--sim-seeds-1, every 3rd frame")
    ap.add_argument("--sim-seeds", type=int, default=2)
    ap.add_argument("--sim-seed0", type=int, default=0,
                    help="first seed (the fine-tuning used demo 100-109 and overlap2 / moving3 "
                         "1000-1011: evaluate demo on 0-2, the others on >= 10000)")
    a = ap.parse_args(argv)
    if a.sim:
        from ..sim.scenarios import make_scenario
        from .data import SimSceneAV
        ds = SimSceneAV([make_scenario(k, s) for k in a.sim
                         for s in range(a.sim_seed0, a.sim_seed0 + a.sim_seeds)],
                        every_n_frames=3)
        res = evaluate_runtime(a.onnx, dataset=ds)
    elif a.checkpoint:
        res = evaluate_checkpoint(a.checkpoint, a.n, a.seed)
    else:
        res = evaluate_runtime(a.onnx, a.n, a.seed)
    print(json.dumps(res, indent=2))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
