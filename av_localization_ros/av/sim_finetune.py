"""Fine-tune the heatmap head + audio encoder on a mix of the synthetic set and simulator scenes.

    python -m av_localization_ros.av.sim_finetune --set init=out/av_train/latest.pt \
        out=out/av_simft2 steps=600 batch_syn=32 lr=3e-4 sup_weight=1.0 w_inactive=4.0

Why: the contrastive (EZ-VSL) loss alone cannot teach *which* talker is speaking in a sim frame:
every sim audio window is speech, so other sim frames are no negatives. The simulator gives the
active talkers' boxes, so sim frames get a supervised term instead:

* box term (sim sounding frames): spatial softmax of the cosine map (/ tau) over the h x w
  cells against the normalised box mask (cells covered by an active talker's box, area-
  weighted), i.e. "the map's mass belongs on the talker with the open mouth";
* suppression term (sim sounding frames): binary cross-entropy pushing cells of *inactive*
  visible talkers (silent distractors) and the background below the active cells' level;
* contrastive term (synthetic batches, shipped recipe: top-40% MIL pooling), which keeps the
  synthetic acceptance numbers.

Training data (sim): seeds disjoint from the evaluation seeds (evaluation: demo 0-2, overlap2 /
moving3 >= 10000): demo 100..109, moving3 / overlap2 1000..1000+N-1, half with the shipped espeak-ng
clips, half with the real speech of ``../shared/data/speech`` (if present); frames with a visible
active talker, plus their horizontal mirror (boxes mirrored). The trunk stays frozen, so its
stride-16 features are precomputed once (cached in ``--out``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .audio_features import log_mel
from .train import config_from, image_tensor, load_checkpoint, mil_logits

EVAL_SEEDS = {"demo": [0, 1, 2], "moving3": list(range(10000, 10006)),
              "overlap2": list(range(10000, 10006))}


def sim_scenes(kinds_seeds, speech_dirs=(None,)):
    from ..sim.scenarios import make_scenario
    out = []
    for k, seeds in kinds_seeds:
        for j, s in enumerate(seeds):
            sd = speech_dirs[j % len(speech_dirs)]
            out.append(make_scenario(k, s, speech_dir=sd))
    return out


def training_scenes(n_demo=10, n_moving=24, n_overlap=12):
    from ..sim.speech import default_speech_dir
    sd = default_speech_dir()
    dirs = (None, str(sd)) if sd is not None else (None,)
    plan = [("demo", list(range(100, 100 + n_demo))),
            ("moving3", list(range(1000, 1000 + n_moving))),
            ("overlap2", list(range(1000, 1000 + n_overlap)))]
    for k, seeds in plan:
        assert not set(seeds) & set(EVAL_SEEDS[k]), "training seeds overlap the evaluation seeds"
    return sim_scenes(plan, dirs)


def all_visible_boxes(rec, j):
    """(active boxes, inactive boxes) normalised, for frame j of a SceneRecording."""
    frame = rec.images[j]
    h, w = frame.image.shape[:2]
    gt = min(rec.ground_truth, key=lambda g: abs(g.stamp_ns - frame.stamp_ns))
    act, ina = [], []
    for sp in gt.speakers:
        if sp.box is None:
            continue
        x0, y0, x1, y1 = sp.box
        b = np.clip([x0 / w, y0 / h, x1 / w, y1 / h], 0.0, 1.0)
        if b[2] > b[0] and b[3] > b[1]:
            (act if sp.active else ina).append(b)
    return np.asarray(act, np.float32).reshape(-1, 4), np.asarray(ina, np.float32).reshape(-1, 4)


def mirror_boxes(boxes: np.ndarray) -> np.ndarray:
    """Normalised boxes of the left-right mirrored image."""
    if not len(boxes):
        return boxes
    return np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)


def box_cells(boxes, hw=(10, 10)) -> np.ndarray:
    """Fraction of each feature cell covered by the union of the normalised boxes."""
    h, w = hw
    s = 8
    m = np.zeros((h * s, w * s), np.float32)
    for x0, y0, x1, y1 in boxes:
        m[int(round(y0 * h * s)):max(int(round(y1 * h * s)), int(round(y0 * h * s)) + 1),
          int(round(x0 * w * s)):max(int(round(x1 * w * s)), int(round(x0 * w * s)) + 1)] = 1
    return m.reshape(h, s, w, s).mean(axis=(1, 3))


@torch.no_grad()
def precompute_sim(model, scenes, every_n, flip: bool, cache: Path, sounding_only=True):
    if cache.exists():
        return torch.load(cache, weights_only=True)
    from .data import SimSceneAV
    ds = SimSceneAV(scenes, every_n)
    size = model.cfg.input_size
    enc = model.image_encoder.eval()
    imgs, mels, act, ina = [], [], [], []
    for i in range(len(ds)):
        s = ds[i]
        if sounding_only and s["kind"] != "sounding":
            continue
        rec, j = ds.items[i]
        a, b = all_visible_boxes(rec, j)
        mel = torch.from_numpy(log_mel(s["audio"]))[None]
        variants = [(s["image"], a, b)]
        if flip:
            variants.append((np.ascontiguousarray(s["image"][:, ::-1]), mirror_boxes(a),
                             mirror_boxes(b)))
        for im, aa, bb in variants:
            imgs.append(image_tensor(im, size))
            mels.append(mel)
            act.append(torch.from_numpy(box_cells(aa)))
            ina.append(torch.from_numpy(box_cells(bb)))
    feats = []
    for i0 in range(0, len(imgs), 64):
        feats.append(enc.features(torch.stack(imgs[i0:i0 + 64])).half())
    d = {"feats": torch.cat(feats), "mels": torch.stack(mels), "act": torch.stack(act),
         "ina": torch.stack(ina)}
    torch.save(d, cache)
    return d


def sim_losses(vmap, aemb, act, ina, tau, cfg_w_ina: float = 2.0):
    """Box (spatial softmax CE) + suppression (BCE on active vs inactive/background cells)."""
    cos = torch.einsum("bchw,bc->bhw", vmap, aemb).flatten(1)
    tgt = act.flatten(1)
    tgt = tgt / tgt.sum(1, keepdim=True).clamp_min(1e-6)
    box = -(tgt * F.log_softmax(cos / tau, dim=1)).sum(1).mean()
    pos = (act.flatten(1) > 0.25).float()
    neg = ((act.flatten(1) == 0)).float()
    w_neg = 1.0 + cfg_w_ina * (ina.flatten(1) > 0.25).float()  # distractor talkers count more
    logit = (cos - 0.2) / 0.1
    bce = F.binary_cross_entropy_with_logits(logit, pos, reduction="none")
    sup = ((bce * pos).sum(1) / pos.sum(1).clamp_min(1) +
           (bce * neg * w_neg).sum(1) / (neg * w_neg).sum(1).clamp_min(1)).mean()
    return box, sup


@dataclasses.dataclass
class FTConfig:
    init: str = "out/av_train/latest.pt"  # stage-1 checkpoint (train_default.yaml)
    out: str = "out/av_simft"
    syn_cache: str = "out/av_train/features_878da15d5da1.pt"
    steps: int = 600
    batch_syn: int = 64
    batch_sim: int = 32
    lr: float = 5e-4
    sim_weight: float = 1.0
    sup_weight: float = 0.5
    topk: float = 0.4
    w_inactive: float = 2.0  # extra weight of inactive-talker cells in the suppression term
    every_n: int = 2
    seed: int = 0


def finetune(cfg: FTConfig):
    torch.set_num_threads(2)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_checkpoint(cfg.init)
    t0 = time.time()
    sim = precompute_sim(model, training_scenes(), cfg.every_n, True, out / "sim_train.pt")
    print(f"sim training frames (incl. mirrors): {len(sim['feats'])}, {time.time() - t0:.0f} s")
    syn = torch.load(cfg.syn_cache, weights_only=True)
    for p in model.image_encoder.parameters():
        p.requires_grad_(False)
    params = list(model.image_encoder.head.parameters()) + list(model.audio_encoder.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 30) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    tau = model.cfg.tau
    g = torch.Generator().manual_seed(cfg.seed)
    n_syn, n_sim = len(syn["feats"]), len(sim["feats"])
    t1 = time.time()
    for step in range(cfg.steps):
        model.train()
        model.image_encoder.eval()
        i = torch.randint(n_syn, (cfg.batch_syn,), generator=g)
        v = model.image_encoder.head(syn["feats"][i].float())
        a = model.audio_encoder(syn["mels"][i])
        logits, _ = mil_logits(v, a, tau, cfg.topk)
        lab = torch.arange(len(i))
        l_syn = F.cross_entropy(logits, lab) + F.cross_entropy(logits.t(), lab)
        j = torch.randint(n_sim, (cfg.batch_sim,), generator=g)
        vs = model.image_encoder.head(sim["feats"][j].float())
        as_ = model.audio_encoder(sim["mels"][j])
        l_box, l_sup = sim_losses(vs, as_, sim["act"][j], sim["ina"][j], tau,
                                  cfg.w_inactive)
        loss = l_syn + cfg.sim_weight * l_box + cfg.sup_weight * l_sup
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            print(f"step {step} loss {loss.item():.3f} syn {l_syn.item():.3f} "
                  f"box {l_box.item():.3f} "
                  f"sup {l_sup.item():.3f} ({time.time() - t1:.0f} s)", flush=True)
    train_s = time.time() - t1
    model.eval()
    ck = out / "latest.pt"
    torch.save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.cfg),
                "config": dataclasses.asdict(cfg), "epoch": 0, "train_s": train_s}, ck)
    print(f"trained {cfg.steps} steps in {train_s:.0f} s -> {ck}")
    return ck


@torch.no_grad()
def sim_eval_sets(model, out: Path, every_n=3):
    """Held-out sim sets (torch path, precomputed features): {name: dict of tensors + boxes}."""
    from .data import SimSceneAV
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for k, seeds in EVAL_SEEDS.items():
        cache = out / f"sim_eval_{k}.pt"
        if cache.exists():
            sets[k] = torch.load(cache, weights_only=False)
            continue
        ds = SimSceneAV(sim_scenes([(k, seeds)]), every_n)
        samples = [ds[i] for i in range(len(ds))]
        size = model.cfg.input_size
        feats = torch.cat([model.image_encoder.features(torch.stack(
            [image_tensor(s["image"], size) for s in samples[i:i + 32]]))
            for i in range(0, len(samples), 32)])
        d = {"feats": feats.half(), "mels": torch.stack([torch.from_numpy(log_mel(s["audio"]))[None]
                                                         for s in samples]),
             "boxes": [s["boxes"] for s in samples]}
        torch.save(d, cache)
        sets[k] = d
    return sets


@torch.no_grad()
def eval_sim(model, sets) -> dict:
    from . import metrics as M
    res = {}
    for k, d in sets.items():
        v = model.image_encoder.head(d["feats"].float())
        a = model.audio_encoder(d["mels"])
        maps = torch.einsum("bchw,bc->bhw", v, a).numpy()
        ev = M.Evaluator()
        for m, b in zip(maps, d["boxes"]):
            ev.add(m, b, M.slavc_confidence(M.upsample_map(m)))
        res[k] = ev.summary()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", nargs="*", default=[], help="FTConfig overrides key=value")
    ap.add_argument("--eval-only", help="checkpoint / weights to evaluate on the sim sets")
    a = ap.parse_args(argv)
    cfg = config_from(FTConfig, {}, a.set)
    torch.set_num_threads(2)
    if a.eval_only:
        model = load_checkpoint(a.eval_only)
    else:
        model = load_checkpoint(finetune(cfg))
    print(json.dumps(eval_sim(model, sim_eval_sets(model, Path(cfg.out))), indent=1))


if __name__ == "__main__":
    main()
