"""RMM training objective (paper eqs. 8-13; the WMM triplet loss, eq. 15, comes from the model).

L_RMM = L_adv + λ'_rec L'_rec + λ_rec L_rec + L_vgg + λ_cCX L_cCX (+ λ_tri L_triplet) (+ λ_id L_id)

- Reconstruction (eqs. 9-10): Huber loss, mean over pixels, on X̂_HR and on X_MR against X_HR:
  0.5 Δ² where Δ <= δ, else δ (Δ - δ/2). **δ = 0.01** by default on images in [0, 1] (about 2.6
  grey levels): L1-like for visible errors, smooth near zero. λ_rec = λ'_rec = 100.
- Perceptual (eq. 11): mean squared error of VGG19 relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
  features with weights 1/32, 1/16, 1/8, 1/4, 1.
- Component contextual loss (eq. 12): -log CX (Mechrez et al. 2018) of VGG19 relu3_2 and relu4_2
  features of the left eye, right eye and mouth crops; boxes come from the model's 5-point
  template (normalised crop coordinates), so they are the same for every aligned sample.
- Adversarial (eq. 8): the non-saturating form of the log-loss (softplus = BCE with logits),
  summed over the multi-scale discriminators with their weights (paper: 4, 2, 1, 1), times a
  global ``adv`` weight (paper: 1).

- Identity (not in the paper; off by default): 1 - cos of FaceNet embeddings of X̂_HR and X_HR
  (:mod:`rmmvideo.train.identity`), a stand-in for the perceptual terms when no VGG19 weights are
  available; FaceNet is not the network the evaluation's FED uses (dlib).
- FaceNet features (not in the paper; off by default): L1 between FaceNet activations of X̂_HR
  and X_HR at four layers (77 to 8 px), each divided by the target's mean activation: a
  perceptual term from a face network (``identity.facenet_losses``; one FaceNet pass serves both).

Perceptual and contextual terms need ImageNet VGG19 weights; with random VGG weights they are
meaningless, so :class:`RMMObjective` disables them (weight 0, with a logged warning) unless the
VGG passed in is ``pretrained``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rmmvideo.models.discriminator import MultiScaleDiscriminator
from rmmvideo.models.vgg import CONTEXTUAL_LAYERS, PERCEPTUAL_LAYERS, VGG19Features
from rmmvideo.train.identity import FEATURE_LAYERS, FaceNetIdentity, facenet_losses

log = logging.getLogger(__name__)

PERCEPTUAL_WEIGHTS: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


# ---------------------------------------------------------------- reconstruction (eqs. 9-10)
def huber_loss(pred: torch.Tensor, target: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    """Mean Huber loss: 0.5 Δ² where Δ = |pred - target| <= δ, else δ (Δ - δ/2). Shapes match."""
    if pred.shape != target.shape:
        raise ValueError(f"huber_loss: pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    d = (pred - target).abs()
    return torch.where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta)).mean()


# ---------------------------------------------------------------- perceptual (eq. 11)
def perceptual_loss(
    vgg: VGG19Features,
    pred: torch.Tensor,
    target: torch.Tensor,
    weights: tuple[float, ...] = PERCEPTUAL_WEIGHTS,
) -> torch.Tensor:
    """Σ_i w_i · MSE(F_i(pred), F_i(target)) over the 5 perceptual layers. Images ``(B, 3, H, W)``."""
    fp = vgg(pred, PERCEPTUAL_LAYERS)
    with torch.no_grad():
        ft = vgg(target, PERCEPTUAL_LAYERS)
    return sum(w * F.mse_loss(fp[n], ft[n]) for w, n in zip(weights, PERCEPTUAL_LAYERS))  # type: ignore[return-value]


# ---------------------------------------------------------------- contextual (eq. 12)
def contextual_similarity(x: torch.Tensor, y: torch.Tensor, h: float = 0.5, eps: float = 1e-5) -> torch.Tensor:
    """CX(x, y) of Mechrez et al. 2018, per sample. Features ``(B, C, H, W)`` (sizes may differ).

    Features are centred by the mean of y, L2-normalised over C; d_ij = 1 - cos(x_i, y_j);
    d̃_ij = d_ij / (min_k d_ik + eps); w_ij = exp((1 - d̃_ij) / h); CX_ij = w_ij / Σ_k w_ik;
    CX = mean_j max_i CX_ij. Returns ``(B,)`` in (0, 1]; 1 when every y_j has a close match.
    """
    if x.shape[:2] != y.shape[:2]:
        raise ValueError(f"contextual_similarity: x {tuple(x.shape)} vs y {tuple(y.shape)}")
    x = x.float().flatten(2)  # (B, C, N)
    y = y.float().flatten(2)  # (B, C, M)
    mu = y.mean(dim=(0, 2), keepdim=True)
    xn = F.normalize(x - mu, dim=1)
    yn = F.normalize(y - mu, dim=1)
    cos = torch.bmm(xn.transpose(1, 2), yn)  # (B, N, M)
    d = (1.0 - cos).clamp_min(0.0)
    d_rel = d / (d.min(dim=2, keepdim=True).values + eps)
    w = torch.exp((1.0 - d_rel) / h)
    cx = w / w.sum(dim=2, keepdim=True)
    return cx.max(dim=1).values.mean(dim=1)


def contextual_loss(x: torch.Tensor, y: torch.Tensor, h: float = 0.5) -> torch.Tensor:
    """-log CX(x, y), averaged over the batch. Features ``(B, C, H, W)``."""
    return -torch.log(contextual_similarity(x, y, h).clamp_min(1e-8)).mean()


def component_boxes(
    template: tuple[tuple[float, float], ...], size: int, eye_scale: float = 0.55, mouth_scale: float = 0.8
) -> dict[str, tuple[int, int, int, int]]:
    """Square pixel boxes ``(top, left, side, side)`` for left eye, right eye, mouth.

    From the 5-point template (left eye, right eye, nose, left / right mouth corner; normalised):
    eye boxes centred on the eye points with side ``eye_scale`` x inter-ocular distance; the mouth
    box centred between the mouth corners with side ``mouth_scale`` x inter-ocular distance.
    Boxes are clipped to the image.
    """
    (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = template
    iod = ((rx - lx) ** 2 + (ry - ly) ** 2) ** 0.5 * size
    out = {}
    for name, (cx, cy), scale in (
        ("left_eye", (lx, ly), eye_scale),
        ("right_eye", (rx, ry), eye_scale),
        ("mouth", ((mlx + mrx) / 2, (mly + mry) / 2), mouth_scale),
    ):
        side = max(2, min(size, int(round(iod * scale))))
        top = int(round(cy * size - side / 2))
        left = int(round(cx * size - side / 2))
        top = min(max(top, 0), size - side)
        left = min(max(left, 0), size - side)
        out[name] = (top, left, side, side)
    return out


def component_contextual_loss(
    vgg: VGG19Features,
    pred: torch.Tensor,
    target: torch.Tensor,
    boxes: dict[str, tuple[int, int, int, int]],
    min_side: int = 32,
) -> torch.Tensor:
    """Σ over components and relu3_2 / relu4_2 of -log CX. Images ``(B, 3, S, S)``.

    Crops smaller than ``min_side`` pixels are bilinearly enlarged to it, so that relu4_2 (1/8
    resolution) still has a few positions at small model sizes.
    """
    total = pred.new_zeros(())
    for top, left, h, w in boxes.values():
        cp = pred[:, :, top : top + h, left : left + w]
        ct = target[:, :, top : top + h, left : left + w]
        if min(h, w) < min_side:
            s = min_side / min(h, w)
            size = (int(round(h * s)), int(round(w * s)))
            cp = F.interpolate(cp, size=size, mode="bilinear", align_corners=False)
            ct = F.interpolate(ct, size=size, mode="bilinear", align_corners=False)
        fp = vgg(cp, CONTEXTUAL_LAYERS)
        with torch.no_grad():
            ft = vgg(ct, CONTEXTUAL_LAYERS)
        for n in CONTEXTUAL_LAYERS:
            total = total + contextual_loss(fp[n], ft[n])
    return total


# ---------------------------------------------------------------- adversarial (eq. 8)
def adversarial_g_loss(disc: MultiScaleDiscriminator, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss Σ_i w_i · mean softplus(-D_i(fake))."""
    return sum(w * F.softplus(-o.float()).mean() for w, o in zip(disc.weights, disc(fake)))  # type: ignore[return-value]


def adversarial_d_loss(
    disc: MultiScaleDiscriminator, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator loss split as (real, fake): Σ_i w_i · mean softplus(-D_i(real)) and
    Σ_i w_i · mean softplus(D_i(fake)); ``fake`` should be detached."""
    lr = sum(w * F.softplus(-o.float()).mean() for w, o in zip(disc.weights, disc(real)))
    lf = sum(w * F.softplus(o.float()).mean() for w, o in zip(disc.weights, disc(fake)))
    return lr, lf  # type: ignore[return-value]


# ---------------------------------------------------------------- the objective (eq. 13)
@dataclass(frozen=True)
class LossWeights:
    """Weights of eq. 13; paper values by default. ``adv`` multiplies the per-scale weights."""

    rec: float = 100.0  # λ_rec, on X̂_HR
    rec_mr: float = 100.0  # λ'_rec, on X_MR
    huber_delta: float = 0.01
    vgg: float = 1.0
    cx: float = 1.0  # λ_cCX
    adv: float = 1.0
    triplet: float = 1.0
    identity: float = 0.0  # λ_id, FaceNet identity term (not in the paper)
    facenet_feat: float = 0.0  # λ_ff, FaceNet feature-matching term (not in the paper)


class RMMObjective(nn.Module):
    """Generator and discriminator losses of RMM.

    Args:
        weights: :class:`LossWeights`.
        template: the model's 5-point template (normalised), for the contextual boxes.
        size: image side ``S``.
        vgg: a :class:`VGG19Features`, or None. Perceptual / contextual terms are active only
            when a VGG is given, it is ``pretrained`` (or ``allow_random_vgg``), and their
            weights are > 0.
        identity_net: FaceNet for the identity term (required when ``weights.identity > 0``).

    ``active`` lists the loss terms that contribute.
    """

    def __init__(
        self,
        weights: LossWeights,
        template: tuple[tuple[float, float], ...],
        size: int,
        vgg: VGG19Features | None = None,
        allow_random_vgg: bool = False,
        identity_net: FaceNetIdentity | None = None,
    ) -> None:
        super().__init__()
        uses_facenet = weights.identity > 0 or weights.facenet_feat > 0
        if uses_facenet and identity_net is None:
            raise ValueError("RMMObjective: the identity and FaceNet feature terms need identity_net")
        self.w = weights
        self.identity_net = identity_net if uses_facenet else None
        self.use_id = weights.identity > 0
        self.use_ff = weights.facenet_feat > 0
        self.boxes = component_boxes(template, size)
        usable = vgg is not None and (vgg.pretrained or allow_random_vgg)
        if (weights.vgg > 0 or weights.cx > 0) and not usable:
            log.warning(
                "no ImageNet VGG19 weights: perceptual and contextual losses are DISABLED "
                "(random VGG features are meaningless); pass vgg_path to enable them"
            )
        self.vgg = vgg if usable else None
        self.use_vgg = usable and weights.vgg > 0
        self.use_cx = usable and weights.cx > 0
        self.use_adv = weights.adv > 0

    @property
    def active(self) -> list[str]:
        names = ["rec", "rec_mr"]
        if self.use_vgg:
            names.append("vgg")
        if self.use_cx:
            names.append("cx")
        if self.use_adv:
            names.append("adv")
        if self.w.triplet > 0:
            names.append("triplet")
        if self.use_id:
            names.append("identity")
        if self.use_ff:
            names.append("facenet_feat")
        return names

    def generator_loss(
        self,
        out: dict[str, torch.Tensor],
        x_hq: torch.Tensor,
        disc: MultiScaleDiscriminator | None,
    ) -> dict[str, torch.Tensor]:
        """Losses of the generator (and key network).

        Args:
            out: the model's ``forward_train`` dict with ``x_hr``, ``x_mr`` ``(B, 3, S, S)``
                and ``loss_wmm`` (scalar WMM triplet loss; ``triplet`` is accepted too).
            x_hq: ground truth ``(B, 3, S, S)`` in [0, 1].
            disc: the discriminators (needed when the adversarial term is active).

        Returns a dict of scalars: ``total`` plus each unweighted term.
        """
        x_hr, x_mr = out["x_hr"].float(), out["x_mr"].float()
        if x_hr.shape != x_hq.shape or x_mr.shape != x_hq.shape:
            raise ValueError(
                f"generator_loss: x_hr {tuple(x_hr.shape)}, x_mr {tuple(x_mr.shape)}, "
                f"x_hq {tuple(x_hq.shape)} must match"
            )
        w = self.w
        terms: dict[str, torch.Tensor] = {
            "rec": huber_loss(x_hr, x_hq, w.huber_delta),
            "rec_mr": huber_loss(x_mr, x_hq, w.huber_delta),
        }
        total = w.rec * terms["rec"] + w.rec_mr * terms["rec_mr"]
        if self.use_vgg:
            assert self.vgg is not None
            terms["vgg"] = perceptual_loss(self.vgg, x_hr, x_hq)
            total = total + w.vgg * terms["vgg"]
        if self.use_cx:
            assert self.vgg is not None
            terms["cx"] = component_contextual_loss(self.vgg, x_hr, x_hq, self.boxes)
            total = total + w.cx * terms["cx"]
        if self.use_adv:
            if disc is None:
                raise ValueError("generator_loss: the adversarial term needs the discriminators")
            terms["adv"] = adversarial_g_loss(disc, x_hr)
            total = total + w.adv * terms["adv"]
        if self.identity_net is not None:
            layers = FEATURE_LAYERS if self.use_ff else ()
            ident, feat = facenet_losses(self.identity_net, x_hr, x_hq, layers)
            if self.use_id:
                terms["identity"] = ident
                total = total + w.identity * ident
            if self.use_ff:
                terms["facenet_feat"] = feat
                total = total + w.facenet_feat * feat
        tri = out.get("loss_wmm", out.get("triplet"))
        if w.triplet > 0 and tri is not None:
            terms["triplet"] = tri.float()
            total = total + w.triplet * terms["triplet"]
        terms["total"] = total
        return terms

    def discriminator_loss(
        self, disc: MultiScaleDiscriminator, x_hq: torch.Tensor, x_hr: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Discriminator losses: ``d_real``, ``d_fake``, ``total`` (= adv weight x their sum)."""
        lr, lf = adversarial_d_loss(disc, x_hq, x_hr.detach())
        return {"d_real": lr, "d_fake": lf, "total": self.w.adv * (lr + lf)}
