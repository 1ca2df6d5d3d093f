"""The render stage: restore the faces of a batch of frames and paste them over the upscaled frames.

Every command renders through ``FaceRenderer``: ``run``, ``batch`` and ``eval-video`` through the
driver (``rmmvideo.video.pipeline``), ``preview`` directly, ``faces`` through ``rmmvideo.video.stills``.
Data flow of one batch (B frames of H x W, N faces, S = the model's crop size, s = the scale):

    FramePlan(frame: DecodedFrame, faces: list[FacePlan]) x B   frame.image (H, W, 3) uint8/uint16
        --(FaceRenderer.prepare: frame -> crop similarity transforms (N, 2, 3), warp)-->
          _FaceBatch: aligned crops (N, 3, S, S) in [0, 1]
        --(TrackStyler: per-track noise (N, z_n_dim), pinned memory slot (N,), strength (N, 2))-->
        --(FaceRenderer.render: RMM restore (N, 3, S, S), detail band, stabiliser, the detail's
          luma and chroma weighed by the strength, masks (N, 1, S, S); the detail is added to
          the upscaled frames by composite.composite_faces)-->
          (B, round(H s), round(W s), 3) uint8 (uint16 for deep input)

Per track: one noise vector (seeded from the run seed and the track id), one memory slot and one
strength, chosen when the track first appears (from its first confident crops: top-1 retrieval
on their mean query; strength given or measured, ``rmmvideo.video.strength``), and a temporal
stabiliser of its restored crops (``rmmvideo.video.stabilise``). ``temporal="frame"`` draws fresh
noise, retrieves per frame and does not stabilise, for comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.video.stabilise import DEFAULT_WINDOW, TemporalStabiliser
from rmmvideo.video.strength import (
    Strength,
    auto_strength,
    effective_scale,
    strength_tensor,
    weigh_detail,
)

if TYPE_CHECKING:  # heavy modules, imported lazily at run time
    from rmmvideo.models.rmm import RMM
    from rmmvideo.video.io import DecodedFrame
    from rmmvideo.video.options import Components, RestoreOptions, StrengthSetting


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class FacePlan:
    """One face to restore in one frame: its track and (smoothed) landmarks in frame pixels."""

    track_id: int
    points5: np.ndarray  # (5, 2) float64
    landmarks68: np.ndarray  # (68, 2) float64
    detected: bool  # detected in this frame (vs propagated/interpolated)
    # the codec's mean quantiser (H.264 QP) over the face's region, in its frame and the
    # deblock.QP_WINDOW frames before it (deblock.deblock_plans); None where no frame gives one
    qp: float | None = None


@dataclass
class FramePlan:
    frame: DecodedFrame
    faces: list[FacePlan]


@dataclass
class TrackStyle:
    """Per-track conditioning: the noise seed, the pinned memory slot (-1: none) and the
    restoration strength (how much of the restored detail's luma and chroma is added to the
    upscale; :class:`rmmvideo.video.strength.Strength`)."""

    noise_seed: int
    slot: int
    strength: Strength = Strength(1.0, 1.0)


def track_noise_seed(run_seed: int, track_id: int) -> int:
    """Deterministic 63-bit seed for a track's noise vector."""
    h = hashlib.sha256(f"rmmvideo-noise:{run_seed}:{track_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


# ----------------------------------------------------------------------------- styles


class TrackStyler:
    """Per-track noise vector, pinned memory slot and restoration strength.

    A track's style is chosen once, from its first confident crops (up to ``pin_frames``): the
    slot by top-1 retrieval with the mean of their queries, the strength as given or, for
    ``strength="auto"``, from the weights' calibration curve at the crops' scale
    (:mod:`rmmvideo.video.strength`). Later
    batches reuse it, so every frame of a track is conditioned and weighted identically.

    Args:
        model: the RMM model (eval mode).
        seed: run seed (per-track noise derives from it).
        pin_frames: how many of a track's first confident crops choose its style.
        styles: styles already chosen (e.g. from a TrackTable).
        strength: "auto", a fixed weight in [0, 1], or fixed (luma, chroma) weights.
        scale: the output's upscale factor (auto strength needs it).
    """

    def __init__(self, model: RMM, seed: int, pin_frames: int = 3,
                 styles: dict[int, TrackStyle] | None = None, strength: StrengthSetting = "auto",
                 scale: float = 2.0) -> None:
        self.model = model
        self.seed = seed
        self.pin_frames = pin_frames
        self.strength = strength
        self.scale = scale
        self.styles: dict[int, TrackStyle] = dict(styles or {})
        self._noise: dict[int, torch.Tensor] = {}

    def pin(self, track_ids: Sequence[int], crops: torch.Tensor, detected: Sequence[bool],
            crop_scale: torch.Tensor | None = None, qp: Sequence[float | None] = ()) -> None:
        """Give a style to every track in ``track_ids`` that has none yet.

        Args:
            track_ids: (N,) track of each crop, in frame order.
            crops: (N, 3, S, S) aligned crops in [0, 1].
            detected: (N,) whether the crop's landmarks come from a detection (confident).
            crop_scale: (N,) crop pixels per frame pixel of each crop (needed for auto strength).
            qp: (N,) each face's mean codec quantiser (``FacePlan.qp``; None or missing:
                unknown), for auto strength.
        """
        new: dict[int, list[int]] = {}
        for i, t in enumerate(track_ids):
            if t not in self.styles:
                new.setdefault(t, []).append(i)
        if not new:
            return
        memory = self.model.memory
        empty = int(memory.filled.sum()) == 0
        for t, idx in new.items():
            conf = ([i for i in idx if detected[i]] or idx)[: self.pin_frames]
            slot = -1
            if not empty:
                with torch.no_grad():
                    q = self.model.query(crops[conf])
                    q = torch.nn.functional.normalize(q.mean(0, keepdim=True), dim=1)
                    _, slots, _ = memory.retrieve(q)
                slot = int(slots[0])
            style = TrackStyle(noise_seed=track_noise_seed(self.seed, t), slot=slot)
            self.styles[t] = style
            known = [q for i in conf if i < len(qp) and (q := qp[i]) is not None]
            style.strength = self._strength(None if crop_scale is None else crop_scale[conf],
                                            float(np.median(known)) if known else None)

    def _strength(self, crop_scale: torch.Tensor | None, qp: float | None) -> Strength:
        """The track's strength: the fixed one, or the weights' calibrated one for its crop scale
        and codec quantiser."""
        if self.strength != "auto":
            return Strength.of(self.strength)
        if crop_scale is None:
            raise ValueError("auto strength needs the crops' scale (crop pixels per frame pixel)")
        return auto_strength(self.model.config, effective_scale(crop_scale, self.scale), qp)

    def noise(self, track_id: int) -> torch.Tensor:
        """(z_n_dim,) noise of a track (cached)."""
        from rmmvideo.models.rmm import make_noise

        if track_id not in self._noise:
            dim = self.model.config.z_n_dim
            self._noise[track_id] = make_noise(self.styles[track_id].noise_seed, 1, dim)[0]
        return self._noise[track_id]


# ----------------------------------------------------------------------------- rendering


class FaceRenderer:
    """Renders frame batches: upscale the frame, restore its faces, paste them back.

    Args:
        comps: model, parser, device.
        options: scale, temporal mode, seed.
        styler: per-track styles (shared across batches).
        gray: the input is greyscale: restored faces are turned grey too.
    """

    def __init__(self, comps: Components, options: RestoreOptions, styler: TrackStyler,
                 gray: bool = False, max_faces_per_call: int = 16, record: bool = False) -> None:
        self.comps = comps
        self.options = options
        self.styler = styler
        self.gray = gray
        self.max_faces = max_faces_per_call
        self.faces_restored = 0
        self.record = record
        self.last: RenderRecord | None = None  # the last batch's faces, when ``record``
        self.stabiliser = TemporalStabiliser(DEFAULT_WINDOW if options.temporal == "track" else 0)

    def prepare(self, plans: Sequence[FramePlan], images: np.ndarray | None = None) -> _FaceBatch | None:
        """Aligned crops of every face in ``plans`` (None when there is none).

        ``images``: the plans' frames already stacked (B, H, W, 3), to avoid a second copy."""
        from rmmvideo.video.align import align_matrices, crop_scale_ok
        from rmmvideo.video.upscale import images_to_tensor

        dev = self.comps.device
        items = [(b, f) for b, p in enumerate(plans) for f in p.faces]
        if not items:
            return None
        cfg = self.comps.model.config
        pts5 = torch.as_tensor(np.stack([f.points5 for _, f in items]), dtype=torch.float64)
        mats = align_matrices(pts5, cfg.template, cfg.size)
        ok = crop_scale_ok(mats).cpu().numpy()
        items = [it for it, k in zip(items, ok) if k]
        if not items:
            return None
        mats = mats[torch.as_tensor(ok)].to(dev)
        with_faces = sorted({b for b, _ in items})
        local = {b: i for i, b in enumerate(with_faces)}
        frames = images[with_faces] if images is not None else np.stack([plans[b].frame.image for b in with_faces])
        fidx = torch.tensor([local[b] for b, _ in items], dtype=torch.long, device=dev)
        crops = _warp(images_to_tensor(frames, dev), fidx, mats, cfg.size)
        return _FaceBatch(items, mats, crops)

    @torch.inference_mode()
    def render(self, plans: Sequence[FramePlan]) -> np.ndarray:
        """Frames with restored faces, upscaled: (B, H', W', 3) uint8 (uint16 for deep input).

        Each face adds ``mask * weigh_detail(detail, strength)`` to the plain upscale, where
        ``detail`` is the restoration's detail (colour and shading stay the input's), stabilised
        along the track in ``temporal="track"`` mode (:mod:`rmmvideo.video.stabilise`), and the
        strength weighs its luma and chroma (:mod:`rmmvideo.video.strength`); faces of strength
        zero are left untouched."""
        from rmmvideo.video.composite import composite_faces, restoration_detail
        from rmmvideo.video.upscale import upscale_images

        dev = self.comps.device
        images = np.stack([p.frame.image for p in plans])
        canvas = upscale_images(images, self.options.scale, dev)
        fb = self.prepare(plans, images)
        if fb is None:
            return canvas
        self.pin_styles(fb)
        styles = [self.styler.styles[f.track_id].strength for _, f in fb.items]
        strength = strength_tensor(styles, dev, fb.crops.dtype)  # (N, 2) luma, chroma
        if self.record:
            self.last = RenderRecord(list(fb.items), fb.mats.detach(),
                                     self._masks(fb.crops, fb.items, fb.mats).detach(), styles)
        keep = torch.nonzero((strength > 0).any(1)).flatten()
        if keep.numel() == 0:
            return canvas
        items = [fb.items[i] for i in keep.tolist()]
        crops, mats = fb.crops[keep], fb.mats[keep]
        model = self.comps.model
        noise, slots = self._conditioning(plans, items, crops)
        n, k = len(items), self.max_faces
        restored = torch.cat([
            model.restore(crops[i:i + k], noise[i:i + k], slots[i:i + k]).x_hr
            for i in range(0, n, k)
        ])
        detail = restoration_detail(restored, crops)
        if self.stabiliser.window > 0:
            stable = self.stabiliser([f.track_id for _, f in items], [plans[b].frame.index for b, _ in items],
                                     crops, crops + detail)
            detail = stable - crops
        detail = weigh_detail(detail, strength[keep])
        masks = self._masks(restored, items, mats)
        composite_faces(canvas, detail, masks, [b for b, _ in items], mats, images.shape[1:3],
                        grey=[self.gray] * len(plans))
        self.faces_restored += n
        return canvas

    def pin_styles(self, fb: _FaceBatch) -> None:
        """Choose the style (slot, strength) of every track of ``fb`` that has none yet."""
        from rmmvideo.video.align import affine_scale

        tracks = [f.track_id for _, f in fb.items]
        if all(t in self.styler.styles for t in tracks):
            return
        self.styler.pin(tracks, fb.crops, [f.detected for _, f in fb.items],
                        crop_scale=affine_scale(fb.mats.to(torch.float64)), qp=[f.qp for _, f in fb.items])

    def _conditioning(self, plans: Sequence[FramePlan], items: list[tuple[int, FacePlan]],
                      crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, z_n_dim) noise and (N,) slots for the faces of a batch (styles already pinned)."""
        from rmmvideo.models.rmm import make_noise

        model = self.comps.model
        dim = model.config.z_n_dim
        dev = crops.device
        if self.options.temporal == "frame":
            seen: dict[int, int] = {}  # faces so far per frame: seed = (pts, face index in frame)
            seeds = []
            for b, _ in items:
                k = seen[b] = seen.get(b, -1) + 1
                seeds.append(track_noise_seed(self.options.seed, plans[b].frame.pts * 1000 + k))
            noise = torch.stack([make_noise(sd, 1, dim)[0] for sd in seeds])
            return noise.to(dev, crops.dtype), torch.full((len(items),), -1, dtype=torch.long, device=dev)
        tracks = [f.track_id for _, f in items]
        noise = torch.stack([self.styler.noise(t) for t in tracks]).to(dev, crops.dtype)
        slots = torch.tensor([self.styler.styles[t].slot for t in tracks], dtype=torch.long, device=dev)
        return noise, slots

    def _masks(self, restored: torch.Tensor, items: list[tuple[int, FacePlan]],
               mats: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) soft paste masks: face parsing when a parser is loaded, else landmarks."""
        from rmmvideo.video.composite import face_masks

        lm = torch.as_tensor(np.stack([f.landmarks68 for _, f in items]), dtype=torch.float64)
        return face_masks(restored, mats, landmarks68=lm, parser=self.comps.parser).to(restored.dtype)


@dataclass
class RenderRecord:
    """What ``FaceRenderer.render`` did to its last batch (for previews and overlays)."""

    items: list[tuple[int, FacePlan]]  # (frame position in the batch, face)
    mats: torch.Tensor  # (N, 2, 3) frame -> crop
    masks: torch.Tensor  # (N, 1, S, S) paste masks (the strength weighs the detail, not these)
    strengths: list[Strength]  # (N,) each face's strength (zero: left as the plain upscale)


@dataclass
class _FaceBatch:
    items: list[tuple[int, FacePlan]]  # (frame position in the batch, face)
    mats: torch.Tensor  # (N, 2, 3) frame -> crop
    crops: torch.Tensor  # (N, 3, S, S) in [0, 1]


def _warp(frames: torch.Tensor, fidx: torch.Tensor, mats: torch.Tensor, size: int) -> torch.Tensor:
    from rmmvideo.video.align import warp_to_crops

    return warp_to_crops(frames, fidx, mats, size).clamp_(0, 1)
