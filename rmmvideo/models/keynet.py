"""Query network of the wavelet memory: ResNet18-style trunk + global pool + FC, L2-normalised.

With ``width=64`` the trunk has exactly torchvision's ``resnet18`` layout and parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1`` ... ``layer4.1.bn2``), so ImageNet weights saved from
torchvision (a ``.pth`` state dict or a ``.safetensors`` file) load with ``load_imagenet``;
torchvision's classifier ``fc.*`` is ignored (our head is ``proj``). Otherwise random init.

Decisions: the input is an RGB image in [0, 1], ImageNet-normalised inside; it is resized to
at most ``MAX_INPUT`` pixels per side (ImageNet scale; the low-quality face holds no finer detail
worth the cost).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmmvideo.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_INPUT = 224


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idt = x if self.downsample is None else self.downsample(x)
        return F.relu(out + idt)


class KeyNet(nn.Module):
    """ResNet18-style query network.

    Args:
        key_dim: size of the output query.
        width: base width (64 = real ResNet18).
    """

    def __init__(self, key_dim: int, width: int = 64) -> None:
        super().__init__()
        w = width
        self.width = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.layer1 = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w, 1))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w, 1))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w, 1))
        self.proj = nn.Linear(8 * w, key_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def trunk_names(self) -> set[str]:
        """State-dict names of the ResNet trunk (everything but the ``proj`` head)."""
        return {k for k in self.state_dict() if not k.startswith("proj.")}

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> L2-normalised query ``(B, key_dim)``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"KeyNet: expected (B, 3, H, W), got {tuple(x.shape)}")
        if max(x.shape[-2:]) > MAX_INPUT:
            s = MAX_INPUT / max(x.shape[-2:])
            size = (max(1, round(x.shape[-2] * s)), max(1, round(x.shape[-1] * s)))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return F.normalize(self.proj(x.mean(dim=(2, 3))), dim=1)

    def load_imagenet(self, path: str | Path) -> None:
        """Load torchvision-format ResNet18 ImageNet weights into the trunk (``fc.*`` ignored).

        Raises:
            UserError: file missing, unreadable, or not matching this trunk (names or shapes).
        """
        p = Path(path)
        if not p.is_file():
            raise UserError(f"ImageNet ResNet18 weights not found: {p}")
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                sd = load_file(str(p))
            else:
                sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"cannot read ResNet18 weights {p}: {type(e).__name__}: {e}") from e
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        if not isinstance(sd, dict):
            raise UserError(f"{p} does not hold a state dict")
        sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.startswith(("fc.", "module.fc."))}
        own = self.state_dict()
        need = self.trunk_names()
        missing = sorted(need - set(sd))
        extra = sorted(set(sd) - need)
        if missing or extra:
            raise UserError(
                f"{p} is not a ResNet18 of width {self.width}: "
                f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}"
            )
        for k in need:
            if tuple(sd[k].shape) != tuple(own[k].shape):
                raise UserError(
                    f"{p}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(own[k].shape)} "
                    f"(width {self.width}; ImageNet ResNet18 needs key_width 64)"
                )
        self.load_state_dict(sd, strict=False)
