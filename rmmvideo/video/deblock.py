"""Codec-artefact removal in each face region, at the input's resolution (``--deblock``).

Most of what a plain upscale of compressed video gets wrong in a face is the codec's error
(blocks, ringing, mosquito noise), present at the input's resolution before any upscaling. Each
face region of a frame (``fuse.face_region``: the 68 landmarks' box grown by 0.3 of its size) goes
through ``ArtefactCNN`` (``rmmvideo.models.artefact``: a small residual CNN trained to undo H.264
on faces) and is blended back with ``fuse.feather_window``, so the rest of the frame is untouched.
The model also reads how coarsely the codec quantised each pixel (``rmmvideo.video.quantiser``:
H.264's QP per macroblock, from the decoder), averaged over the frame and the ``QP_WINDOW``
frames before it; where no frame gives it, it is unknown and the model guesses from the pixels
(``--deblock on``), or the frame is left alone (``--deblock auto``).

It is a stage between tracking and the multi-frame fusion (``deblock_plans``): the fusion, the
upscale, the crops the model restores and the paste all see the cleaned frame. A segment needs
the ``QP_WINDOW`` frames before it as context (``pipeline.context_before``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.video.fuse import blend_region, face_region, peak_of
from rmmvideo.video.quantiser import MAX_QP, QPMap

# Each frame's quantisers are averaged with those of the 8 frames before it: frame types move the
# QP by 3-5 steps (I, P, B) even where a B frame copies its reference's pixels unchanged, and with
# each frame's own QP the cleaned faces flickered (temporal error 1.17x the plain upscale's on the
# 1280x720 shared clip at x4, CRF 30, against 1.03x averaged; PSNR the same)
QP_WINDOW = 8

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

    def clean(self, image: np.ndarray, faces: Sequence[FacePlan], qps: Sequence[QPMap | None] = ()) -> np.ndarray:
        """``image`` (H, W, 3) uint8 or uint16 with its face regions cleaned: a new array, or
        ``image`` itself when it has no face region. ``qps``: the quantisers of the frames before
        it and, last, its own (None where unknown), averaged for a model that reads them
        (``ArtefactConfig.qp_input``)."""
        if self.needs_qp and (not qps or qps[-1] is None):
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
                fixed = self.model(x, self._qp(qps, region)).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            out = blend_region(out, image, region, cur, fixed)
            self.faces_cleaned += 1
        return image if out is None else out


    def _qp(self, qps: Sequence[QPMap | None], region: tuple[int, int, int, int]) -> torch.Tensor | None:
        """(1, 1, h, w) QP / 51 over ``region`` (x0, y0, x1, y1), each pixel's mean over the
        known maps of ``qps``; None when none is known or the model does not read it."""
        known = [q for q in qps if q is not None]
        if not known or not self.model.config.qp_input:
            return None
        x0, y0, x1, y1 = region
        mean = np.mean([q.pixels(y0, y1, x0, x1) for q in known], 0, dtype=np.float32)
        return torch.from_numpy(mean / MAX_QP)[None, None].to(self.device)


def deblock_plans(plans: Iterable[FramePlan], deblocker: Deblocker | None) -> Iterator[FramePlan]:
    """The plans in order, each frame's face regions cleaned (unchanged when ``deblocker`` is
    None), with the quantisers of it and the ``QP_WINDOW`` frames before it."""
    if deblocker is None:
        yield from plans
        return
    history: deque[QPMap | None] = deque(maxlen=QP_WINDOW + 1)
    for p in plans:
        history.append(p.frame.qp)
        image = deblocker.clean(p.frame.image, p.faces, history)
        yield p if image is p.frame.image else replace(p, frame=replace(p.frame, image=image))


def needs_qp(options: RestoreOptions) -> bool:
    """Whether the decode must attach the codec's quantisers (``decode_frames(quantisers=)``)."""
    return options.deblock != "off"


def deblocker_for(options: RestoreOptions, components: Components) -> Deblocker | None:
    """A new deblocker for one pass (None with ``--deblock off``; its count starts at 0) on the
    bundled weights, loaded once per ``Components`` and kept there for the next file."""
    if not needs_qp(options):
        return None
    if components.artefact_model is None:
        from rmmvideo.models.artefact import load_artefact

        components.artefact_model = load_artefact(None, components.device)
    return Deblocker(components.artefact_model, components.device, needs_qp=options.deblock == "auto")
