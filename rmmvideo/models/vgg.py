"""VGG19 feature extractor for the perceptual (eq. 11) and contextual (eq. 12) losses.

The layer list mirrors torchvision's ``vgg19().features`` index for index, so torchvision's
ImageNet state dict (``vgg19-dcbb9e9d.pth``) loads with :func:`load_vgg19` (torchvision itself
does not import beside this torch). Only the layers up to relu5_1 are built (indices 0..29);
the classifier is never used.

Layers returned by :meth:`VGG19Features.forward` (names -> torchvision ``features`` index):

- perceptual: ``relu1_1`` (1), ``relu2_1`` (6), ``relu3_1`` (11), ``relu4_1`` (20),
  ``relu5_1`` (29) -- the five layers of pix2pixHD's VGG loss, which uses the same weights
  1/32, 1/16, 1/8, 1/4, 1 as the paper;
- contextual: ``relu3_2`` (13), ``relu4_2`` (22).

Without ImageNet weights (``pretrained = False``) the features are random and carry no
perceptual meaning: the trainer then turns the perceptual and contextual losses off (and says
so), while the loss functions stay testable on random weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rmmvideo.errors import UserError

# torchvision's cfg "E" up to relu5_1: channel counts, "M" = max-pool.
_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)

LAYER_INDEX: dict[str, int] = {
    "relu1_1": 1,
    "relu2_1": 6,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu4_1": 20,
    "relu4_2": 22,
    "relu5_1": 29,
}
PERCEPTUAL_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
CONTEXTUAL_LAYERS: tuple[str, ...] = ("relu3_2", "relu4_2")

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Frozen VGG19 trunk. Input ``(B, 3, H, W)`` RGB in [0, 1] (ImageNet-normalised inside).

    ``forward(x, layers)`` returns ``{name: (B, C_l, H_l, W_l)}`` for the requested layer names.
    ``pretrained`` is True only after ImageNet weights were loaded.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c_in = int(v)
        # 30 layers: the last two are conv5_1 (28) and relu5_1 (29).
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = False
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGG19Features":  # always frozen, always eval
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...] = PERCEPTUAL_LAYERS) -> dict[str, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG19Features: expected (B, 3, H, W), got {tuple(x.shape)}")
        unknown = [n for n in layers if n not in LAYER_INDEX]
        if unknown:
            raise ValueError(f"VGG19Features: unknown layers {unknown}; known {sorted(LAYER_INDEX)}")
        wanted = {LAYER_INDEX[n]: n for n in layers}
        last = max(wanted)
        h = (x - self.mean) / self.std
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i == last:
                break
        return out


def load_vgg19(path: str | Path | None = None) -> VGG19Features:
    """Build :class:`VGG19Features`; load torchvision's ImageNet state dict from ``path`` if given.

    Accepts the ``vgg19-dcbb9e9d.pth`` file (keys ``features.<i>.weight|bias`` and
    ``classifier.*``; the classifier is ignored). Without ``path`` the weights are random and
    ``pretrained`` stays False.
    """
    model = VGG19Features()
    if path is None:
        return model
    p = Path(path)
    if not p.is_file():
        raise UserError(f"VGG19 weights not found: {p}")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    own = model.state_dict()
    wanted = {k: feats[k] for k in own if k in feats}
    missing = [k for k in own if k not in feats]
    if missing:
        raise UserError(f"{p} is not a torchvision VGG19 state dict (missing {missing[:3]} ...)")
    for k, v in wanted.items():
        if v.shape != own[k].shape:
            raise UserError(f"{p}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(wanted)
    model.pretrained = True
    return model
