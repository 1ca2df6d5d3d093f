"""Codec-artefact removal in each face region, at the input's resolution (``--deblock``).

Most of what a plain upscale of compressed video gets wrong in a face is the codec's error
(blocks, ringing, mosquito noise, 4:2:0 colour bleeding), present at the input's resolution
before any upscaling. Each face region of a frame (``fuse.face_region``: the 68 landmarks' box
grown by 0.3 of its size) goes through ``ArtefactCNN`` (``rmmvideo.models.artefact``: a small
residual CNN trained to undo H.264 on faces); the colour it corrects (not the luma: ``Deblocker``)
is blended back with ``fuse.feather_window``, so the rest of the frame is untouched. The model
also reads how coarsely the codec quantised each pixel (``rmmvideo.video.quantiser``: H.264's QP
per macroblock, from the decoder), averaged over the frame and the ``QP_WINDOW`` frames before
it; where no frame gives it, it is unknown and the model guesses from the pixels (``--deblock
on``). ``--deblock auto`` (the default) changes each face by its ``quantiser.coarseness``: not
at all where the codec coded it finely or gave no quantiser.

It is a stage between tracking and the multi-frame fusion (``deblock_plans``, which also marks
each face with its quantiser, ``FacePlan.qp``, for ``--fuse auto``): the fusion, the upscale,
the crops the model restores and the paste all see the cleaned frame. A segment needs the
``QP_WINDOW`` frames before it as context (``pipeline.context_before``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.video.fuse import LUMA, blend_region, face_region, peak_of
from rmmvideo.video.quantiser import MAX_QP, QPMap, coarseness

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
    """Runs ``model`` on the face regions of frames and keeps the chroma it changed.

    The model was trained on RGB, but only its colour correction is used: the luma of each
    cleaned pixel is put back to the decoded one (BT.601 weights). Its luma correction gained
    as much PSNR as its colour one but moved identity (dlib's descriptor distance to the original
    1.07x the plain upscale's on the 1280x720 shared clip at x4, CRF 30, against 0.97x for the
    colour alone; README, "Codec-artefact removal").

    Args:
        model: the artefact remover (eval mode), on ``device``.
        device: where the regions are computed.
        auto: change each face by its ``coarseness`` (how coarsely the codec coded it; faces
            with no quantiser, or coded finely, are left alone): ``--deblock auto``. Otherwise every
            face is cleaned fully (``--deblock on``).
    """

    def __init__(self, model: ArtefactCNN, device: torch.device, auto: bool = False) -> None:
        # Channels-last weights: a region (an HWC array seen as CHW) is already laid out so, and
        # oneDNN's convolutions run 1.4-1.9x faster on it with 2 threads (80-250 px regions).
        self.model = model.to(memory_format=torch.channels_last)
        self.device = device
        self.auto = auto
        self.faces_cleaned = 0

    def clean(self, image: np.ndarray, faces: Sequence[FacePlan], qps: Sequence[np.ndarray | None] = ()) -> np.ndarray:
        """``image`` (H, W, 3) uint8 or uint16 with its face regions cleaned: a new array, or
        ``image`` itself when no face region changed. ``qps``: for each face, the QP at each pixel
        of its region (``window_qp``; None or missing: unknown), for a model that reads them
        (``ArtefactConfig.qp_input``)."""
        peak = peak_of(image)
        h, w = image.shape[:2]
        out: np.ndarray | None = None
        for i, face in enumerate(faces):
            weight = coarseness(face.qp) if self.auto else 1.0
            region = face_region(face, h, w)
            if region is None or weight == 0.0:
                continue
            x0, y0, x1, y1 = region
            cur = (image if out is None else out)[y0:y1, x0:x1].astype(np.float32) / peak
            qp = qps[i] if i < len(qps) and self.model.config.qp_input else None
            with torch.inference_mode():
                x = torch.from_numpy(cur).permute(2, 0, 1)[None].to(self.device)
                q = None if qp is None else torch.from_numpy(qp / MAX_QP)[None, None].to(self.device)
                fixed = self.model(x, q).clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
            change = fixed - cur
            change -= (change @ LUMA)[..., None]  # the colour only: luma unchanged
            out = blend_region(out, image, region, cur, cur + weight * change)
            self.faces_cleaned += 1
        return image if out is None else out


def window_qp(qps: Sequence[QPMap | None], region: tuple[int, int, int, int] | None) -> np.ndarray | None:
    """(h, w) float32 QP over ``region`` (x0, y0, x1, y1): each pixel's mean over the known maps
    of ``qps``; None when none is known or there is no region."""
    known = [q for q in qps if q is not None]
    if not known or region is None:
        return None
    x0, y0, x1, y1 = region
    return np.mean([q.pixels(y0, y1, x0, x1) for q in known], 0, dtype=np.float32)


def deblock_plans(plans: Iterable[FramePlan], deblocker: Deblocker | None,
                  needed: Callable[[FramePlan], bool] | None = None) -> Iterator[FramePlan]:
    """The plans in order, each face with the mean quantiser of its region over its frame and the
    ``QP_WINDOW`` frames before it (``FacePlan.qp``; None where no frame gives one), and with a
    ``deblocker`` each frame's face regions cleaned with those quantisers (``window_qp``, computed
    once per face for both). ``needed``: asked as each frame arrives; a frame it refuses is
    marked but not cleaned (the analysis pass cleans only the frames that can pin a track)."""
    history: deque[QPMap | None] = deque(maxlen=QP_WINDOW + 1)
    for p in plans:
        history.append(p.frame.qp)
        faces, maps = p.faces, []
        clean = deblocker is not None and (needed is None or needed(p))
        # the faces are marked where this frame has quantisers; the model also reads earlier ones
        if faces and (p.frame.qp is not None or (clean and any(q is not None for q in history))):
            h, w = p.frame.image.shape[:2]
            maps = [window_qp(history, face_region(f, h, w)) for f in faces]
            if p.frame.qp is not None:
                faces = [replace(f, qp=None if m is None else float(m.mean())) for f, m in zip(faces, maps, strict=True)]
        image = deblocker.clean(p.frame.image, faces, maps) if clean else p.frame.image
        if faces is p.faces and image is p.frame.image:
            yield p
        else:
            yield replace(p, faces=faces, frame=p.frame if image is p.frame.image else replace(p.frame, image=image))


def needs_qp(options: RestoreOptions, pins: bool = True) -> bool:
    """Whether the decode must attach the codec's quantisers (``decode_frames(quantisers=)``):
    for ``--deblock`` and ``--fuse auto``, which weigh faces by how coarsely they were coded, and
    for ``--strength auto`` in a pass that ``pins`` tracks' strengths (not batch's second pass,
    which reads them from the track table)."""
    return options.deblock != "off" or options.fuse == "auto" or (pins and options.strength == "auto")


def coding_note(faces: Sequence[FacePlan], options: RestoreOptions) -> str:
    """What ``--deblock`` and ``--fuse`` did to ``faces`` (one frame's, marked by
    ``deblock_plans``), for ``preview``: e.g. ``codec QP 32.1: cleaned and fused``; empty when
    no face carries a quantiser."""
    known = [f.qp for f in faces if f.qp is not None]
    if not known:
        return ""
    qp = float(np.mean(known))
    weight = coarseness(qp)
    done = [word for word, mode in (("cleaned", options.deblock), ("fused", options.fuse))
            if mode == "on" or (mode == "auto" and weight > 0) or (isinstance(mode, int) and mode > 0)]
    partly = any(m == "auto" for m in (options.deblock, options.fuse)) and 0 < weight < 1
    what = " and ".join(done) + (f" ({weight:.0%} of --deblock/--fuse auto)" if partly else "")
    return f"codec QP {qp:.1f}: {what or 'left as decoded'}"


def deblocker_for(options: RestoreOptions, components: Components) -> Deblocker | None:
    """A new deblocker for one pass (None with ``--deblock off``; its count starts at 0) on the
    bundled weights, loaded once per ``Components`` and kept there for the next file."""
    if options.deblock == "off":
        return None
    if components.artefact_model is None:
        from rmmvideo.models.artefact import load_artefact

        components.artefact_model = load_artefact(None, components.device)
    return Deblocker(components.artefact_model, components.device, auto=options.deblock == "auto")
