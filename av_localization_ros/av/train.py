"""Train the audio-visual localisation network.

    python -m av_localization_ros.av.train --config av_localization_ros/av/train_default.yaml [--set key=value ...]
    torchrun --nproc_per_node 4 -m av_localization_ros.av.train --config ...   # DDP

Config is plain data: ``TrainConfig`` below (a YAML file with the same keys overrides it).
Losses (``loss`` terms, all on the L2-normalised map of each image with each audio in the batch):

* EZ-VSL multiple-instance contrastive loss: logits[i, j] = max over positions of
  <V_i(h, w), a_j> / tau; symmetric cross-entropy with the diagonal as positives.
  ``mil_topk_frac > 0`` pools the mean of the top fraction of positions instead of the max
  (the shipped model uses 0.4: sounding objects cover a large part of the frame, and the
  max alone lights up only each object's most distinctive cell - see docs/av_model.md).
* FNAC (``fnac_weight > 0``): false-negative-aware soft targets. The intra-modal similarity
  matrices (audio-audio, pooled-image-pooled-image) say which off-diagonal pairs are probably
  the same kind of source; the row-softmax of the cross-modal logits is pulled towards them
  (L1), so those false negatives are not pushed apart. Plus true-negative enhancement: the
  feature pooled under each image's own normalised map must still pick out its audio.
* SLAVC (``momentum < 1`` and/or dropout): an EMA "momentum" copy of the head and the audio
  encoder supplies the other side of each contrast (online image x momentum audio and
  momentum image x online audio), and dropout regularises both branches.

Training is CPU-friendly: with ``freeze_trunk`` the EfficientNet-Lite0 trunk is frozen and its
features are computed once (``precompute_features``), so an epoch only runs the projection head
and the audio encoder. Checkpoints (``latest.pt``) hold model, momentum model, optimiser, epoch
and config; rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .audio_features import log_mel
from .model import AVModel, ModelConfig


@dataclass
class TrainConfig:
    out_dir: str = "out/av_train"
    model: dict = field(default_factory=dict)  # ModelConfig fields
    data: str = "synthetic"  # synthetic | vggss | flickr | sim
    data_root: str = ""  # for vggss / flickr
    sim_kinds: list = field(default_factory=lambda: ["demo", "moving3"])  # data=sim: scenarios
    sim_seeds: int = 20  # data=sim: seeds 1000..1000+sim_seeds-1 of each kind
    sim_every_n_frames: int = 2
    n_train: int = 3000
    seed: int = 0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    freeze_trunk: bool = True
    image_weights: str = ""  # resnet18: torchvision-style weights to load (random init if empty)
    precompute_features: bool = True
    mil_topk_frac: float = 0.0  # 0 = max over positions (EZ-VSL); > 0 = mean of the top fraction
    fnac_weight: float = 0.0  # FNAC false-negative-aware terms
    fnac_tne_weight: float = 0.0
    momentum: float = 1.0  # SLAVC momentum (1.0 = off); e.g. 0.99
    image_dropout: float = 0.0  # SLAVC dropout on the trunk features
    threads: int = 2
    num_workers: int = 0
    eval_samples: int = 400
    log_every: int = 10

    @classmethod
    def load(cls, path: str | None, overrides: list[str] = ()) -> "TrainConfig":
        d = {}
        if path:
            import yaml
            with open(path) as f:
                d = yaml.safe_load(f) or {}
        return config_from(cls, d, overrides)

    def model_config(self) -> ModelConfig:
        mc = ModelConfig(**self.model)
        mc.input_size = tuple(mc.input_size)
        return mc


def yaml_value(s: str):
    import yaml
    return yaml.safe_load(s)


def config_from(cls, values: dict, overrides=()):
    """``cls(**values)`` (a config dataclass) with ``key=value`` overrides on top. Values are
    parsed as YAML and cast to the type of the field's default: YAML 1.1 reads ``3e-4`` as a
    string, so ``lr=3e-4`` would otherwise not be a float. Unknown keys are an error."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    d = dict(values)
    for ov in overrides:
        k, v = ov.split("=", 1)
        d[k] = yaml_value(v)
    unknown = set(d) - set(fields)
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}")
    for k, v in d.items():
        kind = type(fields[k].default)
        if kind in (int, float, str) and not isinstance(v, kind):
            d[k] = kind(v)
    return cls(**d)


# ---------------------------------------------------------------------------------------------
# losses


def mil_logits(vmap: torch.Tensor, aemb: torch.Tensor, tau: float,
               topk_frac: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """All-pairs maps (B_img, B_aud, h, w) and their pooled score (B_img, B_aud).

    ``topk_frac == 0``: max over positions (EZ-VSL). ``topk_frac > 0``: mean of the top
    ``ceil(topk_frac * h * w)`` positions, a softer multiple-instance pooling that rewards
    covering the whole sounding object rather than its single most distinctive cell.
    """
    maps = torch.einsum("nchw,mc->nmhw", vmap, aemb) / tau
    flat = maps.flatten(2)
    if topk_frac <= 0:
        return flat.max(dim=2).values, maps
    k = max(1, math.ceil(topk_frac * flat.shape[2]))
    return flat.topk(k, dim=2).values.mean(dim=2), maps


def ezvsl_loss(vmap, aemb, tau, topk_frac: float = 0.0):
    logits, maps = mil_logits(vmap, aemb, tau, topk_frac)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels), logits, maps


def fnac_terms(vmap, aemb, logits, maps, tau):
    """(false-negative suppression, true-negative enhancement) - see the module docstring."""
    with torch.no_grad():
        a_t = F.softmax(aemb @ aemb.t() / tau, dim=1)
        vp = F.normalize(vmap.mean(dim=(2, 3)), dim=1, eps=1e-6)
        v_t = F.softmax(vp @ vp.t() / tau, dim=1)
    fns = (F.softmax(logits.t(), dim=1) - a_t).abs().sum(1).mean() \
        + (F.softmax(logits, dim=1) - v_t).abs().sum(1).mean()
    b = logits.shape[0]
    own = maps[torch.arange(b), torch.arange(b)]  # (B, h, w)
    lo = own.flatten(1).min(1).values[:, None, None]
    hi = own.flatten(1).max(1).values[:, None, None]
    w = ((own - lo) / (hi - lo + 1e-5)).unsqueeze(1)
    fg = F.normalize((vmap * w).sum((2, 3)) / (w.sum((2, 3)) + 1e-5), dim=1, eps=1e-6)
    labels = torch.arange(b, device=logits.device)
    tne = F.cross_entropy(fg @ aemb.t() / tau, labels)
    return fns, tne


# ---------------------------------------------------------------------------------------------
# data


def build_dataset(cfg: TrainConfig):
    from . import data
    if cfg.data == "synthetic":
        return data.SyntheticAV(n_samples=cfg.n_train, split="train", seed=cfg.seed,
                                image_size=cfg.model_config().input_size[0])
    if cfg.data == "vggss":
        return data.VggSoundSourceDataset(cfg.data_root)
    if cfg.data == "flickr":
        return data.FlickrSoundNetDataset(cfg.data_root)
    if cfg.data == "sim":  # simulator scenes; keep only frames with a visible active talker
        from ..sim.scenarios import make_scenario
        ds = data.SimSceneAV([make_scenario(k, 1000 + s) for k in cfg.sim_kinds
                              for s in range(cfg.sim_seeds)], cfg.sim_every_n_frames)
        ds.items = [it for i, it in enumerate(ds.items) if ds[i]["kind"] == "sounding"]
        return ds
    raise ValueError(f"unknown data {cfg.data}")


def image_tensor(img_bgr: np.ndarray, size_hw) -> torch.Tensor:
    import cv2
    h, w = size_hw
    if img_bgr.shape[:2] != (h, w):
        img_bgr = cv2.resize(img_bgr, (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(img_bgr.transpose(2, 0, 1))).float()


class AVTorchDataset(Dataset):
    def __init__(self, base, size_hw):
        self.base, self.size_hw = base, size_hw

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = self.base[i]
        return image_tensor(s["image"], self.size_hw), torch.from_numpy(log_mel(s["audio"]))[None]


@torch.no_grad()
def precompute(model: AVModel, base, cfg: TrainConfig, cache: Path) -> TensorDataset:
    if cache.exists():
        d = torch.load(cache, weights_only=True)
        return TensorDataset(d["feats"], d["mels"])
    ds = AVTorchDataset(base, cfg.model_config().input_size)
    feats, mels = [], []
    from tqdm import tqdm
    enc = model.image_encoder.eval()
    for i0 in tqdm(range(0, len(ds), 64), desc="precompute trunk features"):
        items = [ds[i] for i in range(i0, min(i0 + 64, len(ds)))]
        feats.append(enc.features(torch.stack([x for x, _ in items])).half())
        mels.append(torch.stack([m for _, m in items]))
    d = {"feats": torch.cat(feats), "mels": torch.cat(mels)}
    torch.save(d, cache)
    return TensorDataset(d["feats"], d["mels"])


# ---------------------------------------------------------------------------------------------
# training


class _Step(torch.nn.Module):
    """(image or precomputed trunk features, log-mel) -> (feature map, audio embedding); the
    module DDP wraps, so the precomputed-feature path is synchronised too."""

    def __init__(self, model: AVModel, precomputed: bool):
        super().__init__()
        self.model, self.precomputed = model, precomputed

    def forward(self, x, mel):
        if self.precomputed:
            return self.model.image_encoder.head(x), self.model.audio_encoder(mel)
        _, v, a = self.model(x, mel)
        return v, a


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train(cfg: TrainConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    device = torch.device("cpu")
    if distributed:
        import torch.distributed as dist
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    elif torch.cuda.is_available():
        device = torch.device("cuda")

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mcfg = cfg.model_config()
    model = AVModel(mcfg)
    if mcfg.backbone == "resnet18" and cfg.image_weights:
        from .model import load_resnet18_weights
        load_resnet18_weights(model.image_encoder, cfg.image_weights)
    if cfg.freeze_trunk:
        head = set(map(id, model.image_encoder.head.parameters())) if mcfg.backbone == \
            "efficientnet_lite0" else set(map(id, model.image_encoder.proj.parameters()))
        for p in model.image_encoder.parameters():
            if id(p) not in head:
                p.requires_grad_(False)
    use_pre = cfg.precompute_features and cfg.freeze_trunk

    base = build_dataset(cfg)
    if use_pre:
        trunk = [mcfg.backbone, mcfg.stride, list(mcfg.input_size), mcfg.pretrained]
        src = [cfg.data, cfg.data_root, cfg.n_train, cfg.seed]
        if cfg.data == "sim":
            src += [cfg.sim_kinds, cfg.sim_seeds, cfg.sim_every_n_frames]
        key = hashlib.sha1(json.dumps([*src, trunk],
                                      default=str).encode()).hexdigest()[:12]
        cache = out / f"features_{key}.pt"
        if distributed and not is_main():
            torch.distributed.barrier()  # rank 0 computes the cache first
        ds = precompute(model, base, cfg, cache)
        if distributed and is_main():
            torch.distributed.barrier()
    else:
        ds = AVTorchDataset(base, mcfg.input_size)

    model.to(device)
    momentum_model = copy.deepcopy(model) if cfg.momentum < 1.0 else None
    if momentum_model is not None:
        for p in momentum_model.parameters():
            p.requires_grad_(False)
    net = _Step(model, use_pre)
    if distributed:  # gradients all-reduced; negatives are the rank's own batch (no all-gather)
        net = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)

    sampler = None
    if distributed:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(ds, shuffle=True, seed=cfg.seed)
    loader = DataLoader(ds, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=cfg.num_workers, drop_last=True)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))

    start_epoch = 0
    ckpt_path = out / "latest.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if momentum_model is not None and ck.get("momentum_model"):
            momentum_model.load_state_dict(ck["momentum_model"])
        start_epoch = ck["epoch"] + 1
        if is_main():
            print(f"resumed from {ckpt_path} at epoch {start_epoch}")

    from tqdm import tqdm
    tau = mcfg.tau
    for epoch in range(start_epoch, cfg.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        if cfg.freeze_trunk:  # frozen BatchNorm statistics too
            model.image_encoder.eval()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not is_main())
        for x, mel in bar:
            x, mel = x.to(device).float(), mel.to(device)
            if use_pre and cfg.image_dropout > 0:
                x = F.dropout(x, cfg.image_dropout, training=True)
            vmap, aemb = net(x, mel)
            if momentum_model is None:
                loss, logits, maps = ezvsl_loss(vmap, aemb, tau, cfg.mil_topk_frac)
            else:
                with torch.no_grad():
                    mv = momentum_model.image_encoder.head(x) if use_pre else momentum_model.image_encoder(x)
                    ma = momentum_model.audio_encoder(mel)
                l1, logits, maps = ezvsl_loss(vmap, ma, tau, cfg.mil_topk_frac)
                l2, _, _ = ezvsl_loss(mv, aemb, tau, cfg.mil_topk_frac)
                loss = 0.5 * (l1 + l2)
            if cfg.fnac_weight > 0 or cfg.fnac_tne_weight > 0:
                if momentum_model is not None:
                    logits, maps = mil_logits(vmap, aemb, tau, cfg.mil_topk_frac)
                fns, tne = fnac_terms(vmap, aemb, logits, maps, tau)
                loss = loss + cfg.fnac_weight * fns + cfg.fnac_tne_weight * tne
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if momentum_model is not None:
                with torch.no_grad():
                    for pm, po in zip(momentum_model.parameters(), model.parameters()):
                        pm.mul_(cfg.momentum).add_(po.detach(), alpha=1 - cfg.momentum)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if is_main():
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch,
                        "momentum_model": momentum_model.state_dict() if momentum_model else None,
                        "config": dataclasses.asdict(cfg), "model_config": dataclasses.asdict(mcfg)},
                       ckpt_path.with_suffix(".tmp"))
            os.replace(ckpt_path.with_suffix(".tmp"), ckpt_path)
    if distributed:
        torch.distributed.destroy_process_group()
    return ckpt_path


def load_checkpoint(path: str | Path, momentum: bool = False) -> AVModel:
    """The trained model (eval mode); ``momentum=True`` returns the SLAVC momentum copy if any."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    mc = ModelConfig(**ck["model_config"])
    mc.input_size = tuple(mc.input_size)
    mc.pretrained = False
    model = AVModel(mc)
    sd = ck["momentum_model"] if momentum and ck.get("momentum_model") else ck["model"]
    model.load_state_dict(sd)
    return model.eval()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=None, help="YAML with TrainConfig keys")
    ap.add_argument("--set", nargs="*", default=[], help="overrides key=value")
    ap.add_argument("--eval", action="store_true", help="evaluate on the held-out set afterwards")
    args = ap.parse_args(argv)
    cfg = TrainConfig.load(args.config, args.set)
    t0 = time.time()
    ckpt = train(cfg)
    if is_main():
        print(f"trained in {time.time() - t0:.0f} s -> {ckpt}")
        if args.eval:
            from .evaluate import evaluate_checkpoint
            res = evaluate_checkpoint(ckpt, n=cfg.eval_samples)
            print(json.dumps(res, indent=2))
            (Path(cfg.out_dir) / "metrics.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
