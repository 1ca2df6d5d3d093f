"""Codec-artefact removal in each face region, at the input's resolution (``--deblock``).

Most of what a plain upscale of compressed video gets wrong in a face is the codec's error
(blocks, ringing, mosquito noise), present at the input's resolution before any upscaling. Each
face region of a frame (``fuse.face_region``: the 68 landmarks' box grown by 0.3 of its size) goes
through ``ArtefactCNN`` (``rmmvideo.models.artefact``: a small residual CNN trained to undo H.264
on faces) and is blended back with ``fuse.feather_window``, so the rest of the frame is untouched.

It is a stage between tracking and the multi-frame fusion (``deblock_plans``): the fusion, the
upscale, the crops the model restores and the paste all see the cleaned frame. Each frame is
cleaned on its own, so segments and previews need no context for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.video.fuse import blend_region, face_region, peak_of
from rmmvideo.video.quantiser import MAX_QP, QPMap

if TYPE_CHECKING:
    from rmmvideo.models.artefact import ArtefactCNN
    from rmmvideo.video.options import Components, RestoreOptions
    from rmmvideo.video.render import FacePlan, FramePlan


class Deblocker:
    """Runs ``model`` on the face regions of frames.

    Args:
        model: the artefact remover (eval mode), on ``device``.
        device: where the regions are computed.
        needs_qp: leave frames without the codec's quantiser alone (``--deblock auto``).
    """

    def __init__(self, model: ArtefactCNN, device: torch.device, needs_qp: bool = False) -> None:
        self.model = model
        self.device = device
        self.needs_qp = needs_qp
        self.faces_cleaned = 0

    def clean(self, image: np.ndarray, faces: Sequence[FacePlan], qp: QPMap | None = None) -> np.ndarray:
        """``image`` (H, W, 3) uint8 or uint16 with its face regions cleaned: a new array, or
        ``image`` itself when it has no face region. ``qp``: the frame's quantisers, for a model
        that reads them (``ArtefactConfig.qp_input``; None: unknown)."""
        if self.needs_qp and qp is None:
            return image
        peak = peak_of(image)
        h, w = image.shape[:2]
        out: np.ndarray | None = None
        for face in faces:
            region = face_region(face, h, w)
            if region is None:
                continue
            x0, y0, x1, y1 = region
            cur = (image if out is None else out)[y0:y1, x0:x1].astype(np.float32) / peak
            with torch.inference_mode():
                x = torch.from_numpy(cur).permute(2, 0, 1)[None].to(self.device)
                fixed = self.model(x, self._qp(qp, region)).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            out = blend_region(out, image, region, cur, fixed)
            self.faces_cleaned += 1
        return image if out is None else out


    def _qp(self, qp: QPMap | None, region: tuple[int, int, int, int]) -> torch.Tensor | None:
        """(1, 1, h, w) QP / 51 over ``region`` (x0, y0, x1, y1), or None (unknown, or a model
        that does not read it)."""
        if qp is None or not self.model.config.qp_input:
            return None
        x0, y0, x1, y1 = region
        return torch.from_numpy(qp.pixels(y0, y1, x0, x1) / MAX_QP)[None, None].to(self.device)


def deblock_plans(plans: Iterable[FramePlan], deblocker: Deblocker | None) -> Iterator[FramePlan]:
    """The plans in order, each frame's face regions cleaned (unchanged when ``deblocker`` is None)."""
    if deblocker is None:
        yield from plans
        return
    for p in plans:
        image = deblocker.clean(p.frame.image, p.faces, p.frame.qp)
        yield p if image is p.frame.image else replace(p, frame=replace(p.frame, image=image))


def deblocker_for(options: RestoreOptions, components: Components) -> Deblocker | None:
    """The run's deblocker (None with ``--deblock off``): the bundled weights, loaded once per
    ``Components`` and kept there for the next file."""
    if options.deblock == "off":
        return None
    if components.deblocker is None:
        from rmmvideo.models.artefact import load_artefact

        components.deblocker = Deblocker(load_artefact(None, components.device), components.device)
    components.deblocker.needs_qp = options.deblock == "auto"
    return components.deblocker
