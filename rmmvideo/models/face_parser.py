"""BiSeNet face parser (19 CelebAMask-HQ classes), laid out like the widely used public
face-parsing checkpoint ``79999_iter.pth`` (zllrunning/face-parsing.PyTorch) so that file loads
strictly from a local path. No weights ship with rmmvideo and none are downloaded.

Architecture: a ResNet-18 context path (``cp.resnet``) with attention refinement on its 1/16
and 1/32 features and a global-context branch; as in that checkpoint, the separate spatial path
is replaced by the ResNet's 1/8 feature, fused with the context feature by a feature fusion
module (``ffm``); three heads (``conv_out``, ``conv_out16``, ``conv_out32``) predict 19 classes;
the first is the parsing output, the others were auxiliary training heads.

Input: RGB in [0, 1] normalised with ImageNet mean/std (:func:`normalize`), usually 512x512.
Labels (CelebAMask-HQ order): 0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye,
6 eye_g (glasses), 7 l_ear, 8 r_ear, 9 ear_r (earring), 10 nose, 11 mouth, 12 u_lip, 13 l_lip,
14 neck, 15 neck_l (necklace), 16 cloth, 17 hair, 18 hat.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rmmvideo.errors import UserError
from rmmvideo.models.keynet import BasicBlock  # torchvision's block, the checkpoint's names

N_CLASSES = 19
LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear",
          "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))


class Resnet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 features (128, 256, 512 channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return f8, f16, f32


class AttentionRefinementModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3, 1, 1)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        att = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * att


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_head16 = ConvBNReLU(128, 128, 3, 1, 1)
        self.conv_avg = ConvBNReLU(512, 128, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(f32, 1))
        s32 = self.arm32(f32) + F.interpolate(avg, size=f32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(s32, size=f16.shape[2:], mode="nearest"))
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, size=f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusionModule(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1, 1, 0)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], 1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * att + feat


class BiSeNetOutput(nn.Module):
    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3, 1, 1)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face parser. ``forward(x (B, 3, H, W) normalised) -> logits (B, 19, H, W)``; with
    ``aux=True`` also the two auxiliary heads' logits."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, n_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, n_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, n_classes)

    def forward(self, x: torch.Tensor, aux: bool = False):
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"BiSeNet: expected (B, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[2:]
        f8, cp8, cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(f8, cp8)), (h, w), mode="bilinear", align_corners=True)
        if not aux:
            return out
        o16 = F.interpolate(self.conv_out16(cp8), (h, w), mode="bilinear", align_corners=True)
        o32 = F.interpolate(self.conv_out32(cp16), (h, w), mode="bilinear", align_corners=True)
        return out, o16, o32


def normalize(images: torch.Tensor) -> torch.Tensor:
    """RGB (B, 3, H, W) in [0, 1] -> the parser's input (ImageNet mean/std)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def load_face_parser(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> BiSeNet:
    """BiSeNet with weights from a local ``79999_iter.pth``-style state dict, loaded strictly
    (a ``module.`` prefix from DataParallel is removed; absent BatchNorm ``num_batches_tracked``
    counters of old checkpoints are filled in, nothing else). Returns the model in eval mode.
    UserError when the file is missing, unreadable or does not match the architecture."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"face parser weights not found: {p}")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # any unreadable/mismatched file is a user error
        raise UserError(f"cannot read face parser weights {p}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"face parser weights {p}: expected a state dict")
    state = {(k.removeprefix("module.")): v for k, v in state.items()}
    net = BiSeNet(N_CLASSES)
    own = net.state_dict()
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad)) if keys
        )
        raise UserError(f"face parser weights {p} do not match BiSeNet (19 classes): {detail}")
    net.load_state_dict(state, strict=True)
    return net.eval()
