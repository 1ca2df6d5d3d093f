"""Preview one frame of a video as ``rmmvideo run`` would restore it, side by side with the input.

How a preview matches ``run``: the frame is decoded frame-accurately (random access by index or
time, PyAV with seeks to the preceding keyframe) through ``run``'s view of archive footage
(deinterlaced, anamorphic pixels made square; with ``--deinterlace field`` frame indices and
``--at`` times are the fields', as in ``run``'s double-rate output), and the faces around it are tracked over a
short window of frames through the same tracker, ``plan_frames`` and ``FaceRenderer`` as
``run``. The window starts ``window`` frames (at least ``--fuse``'s) before the target (rounded
down so the detection frames and the render batches fall on the same frame indices as in
``run``) and ends ``tracker.lag + detect_every + fuse`` frames after it, enough for the tracker to
finalise the target frame exactly as it would in a full pass and for the multi-frame fusion
(``rmmvideo.video.fuse``) to see the target's neighbours. The left panel is the plain upscale of
the decoded frame (before fusion).

Where it can differ from ``run`` (the window's start pins things a full pass pins earlier):
- when the window reaches back to frame 0 (targets within about ``window`` frames of the start),
  the tracks, landmarks, noise and memory slots are those of ``run``: only float rounding of a
  different model batch size remains (at most a level or two on a few pixels);
- otherwise tracks already alive before the window are born again at its start: their ids are
  counted from the window (so their noise seeds, derived from the id, differ from ``run``'s),
  and their memory slot is pinned from their first confident crops inside the window; a track
  that ``run`` ended during a gap before the window may be merged or split differently.
  The target frame's landmarks are still ``run``'s once the window holds at least the
  tracker's smoothing radius (``ceil(2.5 sigma)``, 5 frames by default) of the track before the
  target and its detections associate the same way (tested on a real clip).
- deep (10/12-bit) input is previewed from its 8-bit decode (``run`` renders it at 16 bits).

Output (``rmmvideo preview``): a PNG ``[input upscaled | restored]`` of size (2 W s, H s),
by default ``INPUT_STEM.frameN.png`` beside the input (as ``run`` writes beside it), written
through a temporary file renamed on success, never over the input. ``--at`` counts from the
first frame's timestamp (a player's position), not from pts 0.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time as _time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rmmvideo.errors import UserError
from rmmvideo.video.composite import canvas_matrix
from rmmvideo.video.io import batched
from rmmvideo.video.io_decode import RandomAccessReader
from rmmvideo.video.options import Components, RestoreOptions
from rmmvideo.video.render import FramePlan, RenderRecord
from rmmvideo.video.strength import Strength

DEFAULT_WINDOW = 24  # frames of context before the target (about one second)

_TIME_RE = re.compile(r"^(?:(?:(\d+):)?(\d+):)?(\d+(?:\.\d*)?|\.\d+)$")

# Overlay colours per track id (RGB), cycled.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64), (64, 200, 255), (80, 255, 80), (255, 200, 0), (255, 80, 255),
    (0, 255, 200), (255, 140, 40), (160, 120, 255),
)
OUTLINE_COLOUR = (255, 255, 0)


def parse_timestamp(text: str) -> float:
    """``HH:MM:SS.mmm``, ``MM:SS(.mmm)`` or seconds (``12.5``) -> seconds (float >= 0).

    Raises:
        UserError: anything else (negative, empty, minutes/seconds fields >= 60 in clock form).
    """
    s = text.strip()
    m = _TIME_RE.match(s)
    if not m:
        raise UserError(f"bad time {text!r}: use HH:MM:SS.mmm, MM:SS.mmm or seconds")
    hours, minutes, seconds = m.group(1), m.group(2), float(m.group(3))
    if minutes is not None and seconds >= 60:
        raise UserError(f"bad time {text!r}: seconds must be below 60 in MM:SS form")
    if hours is not None and int(minutes) >= 60:
        raise UserError(f"bad time {text!r}: minutes must be below 60 in HH:MM:SS form")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + seconds


# ----------------------------------------------------------------------------- records


@dataclass
class PreviewFace:
    """One restored face of the previewed frame, in restored-canvas pixels.

    ``quad`` (4, 2): corners of the aligned crop square (top-left, top-right, bottom-right,
    bottom-left); ``box`` (4,) xyxy bounding box of the quad; ``alpha`` (H', W') float32 paste
    mask coverage on the canvas (kept only when asked for: overlays); ``landmarks68`` (68, 2)
    the tracked (smoothed) landmarks in input-frame pixels."""

    track_id: int
    detected: bool
    quad: np.ndarray
    box: np.ndarray
    alpha: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    strength: Strength = Strength(1.0, 1.0)  # restoration strength of the face's track (zero: plain upscale)


@dataclass
class PreviewInfo:
    """What was previewed: frame ``index`` (0-based, presentation order), its ``pts`` and ``time``
    (seconds, pts x time_base), the frames decoded and tracked ``[window_start, window_start +
    window_frames)``, the faces restored, the detector used and the wall time."""

    index: int
    pts: int
    time: float
    window_start: int
    window_frames: int
    faces: list[PreviewFace] = field(default_factory=list)
    detector: str = ""
    seconds: float = 0.0
    coding: str = ""  # what --deblock and --fuse did to the faces (deblock.coding_note), or ""

    def line(self) -> str:
        ids = ", ".join(str(f.track_id) for f in self.faces)
        faces = f"{len(self.faces)} face{'s' if len(self.faces) != 1 else ''}" + (f" (tracks {ids})" if ids else "")
        coding = f"; {self.coding}" if self.coding else ""
        return (f"frame {self.index} (t={self.time:.3f} s): {faces}{coding}; tracked over frames "
                f"{self.window_start}..{self.window_start + self.window_frames - 1}; {self.seconds:.1f} s")


@dataclass
class PreviewResult:
    """``upscaled`` and ``restored``: (H', W', 3) uint8 (the input frame upscaled as ``run`` does,
    and ``run``'s output for that frame); ``info``."""

    upscaled: np.ndarray
    restored: np.ndarray
    info: PreviewInfo

    def side_by_side(self, overlay: bool = False) -> np.ndarray:
        """(H', 2 W', 3) uint8: [upscaled input | restored], overlay drawn on the restored half."""
        right = draw_overlay(self.restored, self.info.faces) if overlay else self.restored
        return np.concatenate([self.upscaled, right], axis=1)


# ----------------------------------------------------------------------------- rendering


def _resolve_index(reader: RandomAccessReader, index: int | None, time: float | None, path: Path) -> int:
    n = len(reader)
    if index is not None:
        if not 0 <= index < n:
            raise UserError(f"frame {index} out of range: {path.name} has {n} frames (0..{n - 1})")
        return int(index)
    assert time is not None
    pts = reader.pts
    tb = float(reader.time_base)
    gaps = np.diff(pts)
    last = float(np.median(gaps[gaps > 0])) if (gaps > 0).any() else 0.0
    end = float(pts[-1] - pts[0] + last) * tb  # duration from the first frame's start
    if time < 0 or (time >= end and not (n == 1 and time == 0)):
        raise UserError(f"time {time:.3f} s out of range: {path.name} lasts {end:.3f} s")
    return int(reader.index_of_time(float(pts[0]) * tb + time))


def render_preview(input: str | os.PathLike, index: int | None = None, time: float | None = None,
                   options: RestoreOptions | None = None, window: int = DEFAULT_WINDOW,
                   components: Components | None = None, keep_masks: bool = False,
                   log: Callable[[str], None] | None = None) -> PreviewResult:
    """Restore one frame of a video as ``run`` would (see the module docstring).

    Args:
        input: any video FFmpeg reads.
        index: 0-based frame index, or
        time: seconds from the first frame (the frame shown at that time).
        options: ``options.RestoreOptions`` (scale, weights, detector, seed, temporal, ...).
        window: frames of tracking context before the target (>= 0).
        components: prebuilt ``options.Components`` (reuse across previews).
        keep_masks: fill ``PreviewFace.alpha`` (for the overlay's mask outlines).
        log: where to say which detector is used (None: stderr unless options.quiet).
    Returns:
        PreviewResult(upscaled, restored, info).
    Raises:
        UserError: unreadable input, frame or time out of range, bad window.
    """
    from rmmvideo.video.io import probe
    from rmmvideo.video.options import build_components
    from rmmvideo.video.deblock import coding_note, deblock_plans, deblocker_for, needs_qp
    from rmmvideo.video.fuse import fuse_plans, fusion_for
    from rmmvideo.video.pipeline import context_before, decode_view, make_tracker, plan_frames
    from rmmvideo.video.render import FaceRenderer, TrackStyler
    from rmmvideo.video.upscale import upscale_images

    if (index is None) == (time is None):
        raise ValueError("give exactly one of index= or time=")
    if window < 0:
        raise UserError(f"--window must be >= 0, got {window}")
    opts = options or RestoreOptions()
    if log is None:
        log = (lambda _m: None) if opts.quiet else (lambda m: print(m, file=sys.stderr))
    t0 = _time.perf_counter()
    info = probe(input)
    view = decode_view(info, opts, None)  # run's deinterlacing and square pixels
    if not view.as_stored:
        log(f"{info.path.name}: {view.reason}")
    with RandomAccessReader(info.path, view=view, quantisers=needs_qp(opts)) as reader:
        target = _resolve_index(reader, index, time, info.path)
        comps = components or build_components(opts, log)
        tracker = make_tracker(comps.detector, opts)
        k = int(opts.detect_every)
        align = k * opts.batch_size // math.gcd(k, opts.batch_size)
        fusion = fusion_for(opts)
        start = max(0, target - max(window, context_before(opts)))
        start -= start % align  # same detection frames and render batches as a full pass
        count = (target - start) + int(tracker.lag) + k + fusion.radius
        decoded = min(count, len(reader) - start)
        frames = reader.window(start, count)
        styler = TrackStyler(comps.model, opts.seed, strength=opts.strength, scale=opts.scale)
        renderer = FaceRenderer(comps, opts, styler, gray=info.is_gray, record=True)
        originals: dict[int, np.ndarray] = {}  # the target's decoded image, for the plain upscale

        def remember(plans: Iterator[FramePlan]) -> Iterator[FramePlan]:
            for p in plans:
                if p.frame.index == target:
                    originals[target] = p.frame.image
                yield p

        tracked = plan_frames(frames, tracker, opts.batch_size)
        plans = fuse_plans(deblock_plans(remember(tracked), deblocker_for(opts, comps)), fusion)
        hit: list | None = None
        recent: deque = deque(maxlen=renderer.stabiliser.window or None)  # the stabiliser's history
        try:
            for batch in batched(plans, opts.batch_size):
                with torch.inference_mode():  # styles pin from each track's first batch, as in run
                    fb = renderer.prepare(batch)
                    if fb is not None:
                        renderer.pin_styles(fb)
                if any(p.frame.index == target for p in batch):
                    hit = batch
                    break
                if renderer.stabiliser.window:
                    recent.extend(batch)
        finally:
            plans.close()  # type: ignore[attr-defined]
            tracked.close()  # type: ignore[attr-defined]
            close = getattr(frames, "close", None)
            if close is not None:
                close()
    if hit is None:
        raise UserError(f"could not decode frame {target} of {info.path}")
    pos = next(i for i, p in enumerate(hit) if p.frame.index == target)
    plan = hit[pos]
    # Frame mode draws noise by position in the render batch: render run's whole batch then.
    # Track mode: the target with the frames the stabiliser averages it with.
    if opts.temporal == "frame":
        to_render, b = hit, pos
    else:
        history = (list(recent) + hit[:pos])[-renderer.stabiliser.window:] if renderer.stabiliser.window else []
        to_render, b = history + [plan], len(history)
    restored = renderer.render(to_render)[b]
    image = originals[target]  # the plain upscale is of the decoded frame, before fusion
    upscaled = upscale_images(image, opts.scale, comps.device)
    faces = _faces_of(renderer.last, b, image.shape[:2], restored.shape[:2], keep_masks)
    pinfo = PreviewInfo(target, plan.frame.pts, plan.frame.time, start, decoded, faces,
                        comps.detector_name, _time.perf_counter() - t0, coding_note(plan.faces, opts))
    return PreviewResult(upscaled, restored, pinfo)


def _faces_of(last: RenderRecord | None, b: int, size: tuple[int, int], out_size: tuple[int, int],
              keep_masks: bool) -> list[PreviewFace]:
    """PreviewFace records of frame ``b`` of the last rendered batch."""
    from rmmvideo.video.align import compose_affine, invert_affine, paste_back

    if last is None:
        return []
    items, mats, masks = last.items, last.mats, last.masks
    sel = [i for i, (fb, _) in enumerate(items) if fb == b]
    if not sel:
        return []
    h, w = size
    oh, ow = out_size
    s = masks.shape[-1]
    to_canvas = compose_affine(canvas_matrix(h, w, oh, ow), invert_affine(mats[sel].cpu().to(torch.float64)))
    corners = torch.tensor([[-0.5, -0.5, 1.0], [s - 0.5, -0.5, 1.0], [s - 0.5, s - 0.5, 1.0],
                            [-0.5, s - 0.5, 1.0]], dtype=torch.float64)
    quads = torch.einsum("nij,kj->nki", to_canvas, corners).numpy()
    out = []
    for j, i in enumerate(sel):
        face = items[i][1]
        alpha = None
        if keep_masks:
            m = masks[i:i + 1].cpu().float()
            alpha = paste_back(torch.zeros(1, 1, oh, ow), torch.ones(1, 1, s, s), m,
                               torch.zeros(1, dtype=torch.long), to_canvas[j:j + 1])[0, 0].numpy()
        q = quads[j]
        box = np.array([q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()])
        out.append(PreviewFace(int(face.track_id), bool(face.detected), q, box, alpha,
                               np.asarray(face.landmarks68, np.float64), last.strengths[i]))
    return out


def preview_frame(input: str | os.PathLike, index: int | None = None, time: float | None = None,
                  options: RestoreOptions | None = None, overlay: bool = False, window: int = DEFAULT_WINDOW,
                  components: Components | None = None) -> tuple[np.ndarray, PreviewInfo]:
    """Side-by-side preview of one frame: ``(H', 2 W', 3)`` uint8 ``[input upscaled | restored]``
    (overlay of track ids, crop boxes and mask outlines on the right half when ``overlay``),
    and its PreviewInfo. See :func:`render_preview` for the arguments."""
    res = render_preview(input, index=index, time=time, options=options, window=window,
                         components=components, keep_masks=overlay)
    return res.side_by_side(overlay), res.info


# ----------------------------------------------------------------------------- overlay


def mask_outline(alpha: np.ndarray, level: float = 0.5, width: int = 1) -> np.ndarray:
    """(H, W) bool: pixels inside ``alpha >= level`` that touch a pixel outside it (4-neighbours;
    the image border is not an edge), grown inwards to ``width`` pixels."""
    inside = np.asarray(alpha) >= level
    edge = np.zeros_like(inside)
    cur = inside
    for _ in range(max(1, width)):
        pad = np.pad(cur, 1, mode="edge")
        eroded = cur & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
        edge |= cur & ~eroded
        cur = eroded
    return edge


def track_colour(track_id: int) -> tuple[int, int, int]:
    return PALETTE[track_id % len(PALETTE)]


def draw_overlay(image: np.ndarray, faces: Sequence[PreviewFace]) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 with, per face, its paste-mask outline (yellow, when
    ``alpha`` is set), its crop square (the track's colour) and a label with its track id and
    restoration strength (``id 3 s0.62``, or ``id 3 s0.38/0.75`` for luma/chroma weights that
    differ; ``id 3* s0.62`` when the landmarks were interpolated between detections, not
    detected here)."""
    from PIL import Image, ImageDraw, ImageFont

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_overlay: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    lw = max(1, round(min(h, w) / 400))
    out = image.copy()
    for f in faces:
        if f.alpha is not None:
            if f.alpha.shape != (h, w):
                raise ValueError(f"draw_overlay: alpha {f.alpha.shape} does not match the image {(h, w)}")
            out[mask_outline(f.alpha, 0.5, lw)] = OUTLINE_COLOUR
    im = Image.fromarray(out)
    draw = ImageDraw.Draw(im)
    size = max(10, round(min(h, w) / 40))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    for f in faces:
        colour = track_colour(f.track_id)
        pts = [(float(x), float(y)) for x, y in f.quad]
        draw.line(pts + [pts[0]], fill=colour, width=lw)
        label = f"id {f.track_id}" + ("" if f.detected else "*") + f" s{f.strength}"
        x0, y0 = float(f.box[0]), float(f.box[1])
        tb = draw.textbbox((0, 0), label, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y0 - th - 2 * lw - 2 if y0 - th - 2 * lw - 2 >= 0 else float(f.box[3]) + lw
        tx = min(max(0.0, x0), max(0.0, w - tw - 4))
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=colour)
        draw.text((tx + 2 - tb[0], ty + 2 - tb[1]), label, fill=(0, 0, 0), font=font)
    return np.asarray(im).copy()


# ----------------------------------------------------------------------------- output


def default_preview_path(input: str | os.PathLike, index: int) -> Path:
    """``clip.mp4`` -> ``clip.frame120.png`` beside the input (as ``run`` writes beside it)."""
    p = Path(input)
    return p.with_name(f"{p.stem}.frame{index}.png")


def check_output(path: str | os.PathLike, input: str | os.PathLike | None = None) -> Path:
    """The output path, or a UserError when it is the input, a folder, or in a missing folder."""
    target = Path(path)
    if input is not None and target.resolve() == Path(input).resolve():
        raise UserError(f"refusing to overwrite the input {input}")
    if target.is_dir():
        raise UserError(f"output {target} is a folder: give a file name such as {target / 'preview.png'}")
    if not target.parent.is_dir():
        raise UserError(f"output folder does not exist: {target.parent}")
    return target


def save_preview(path: str | os.PathLike, image: np.ndarray, input: str | os.PathLike | None = None) -> Path:
    """Write ``image`` (H, W, 3) uint8 through a temporary file renamed on success. The format
    follows the suffix when Pillow knows it (.png, .jpg, .webp, ...), else PNG. Refuses the input."""
    from PIL import Image

    from rmmvideo.video.stills import _atomic_save

    target = check_output(path, input)
    fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
    try:
        return _atomic_save(Image.fromarray(np.ascontiguousarray(image)), target, fmt)
    except PermissionError as e:
        raise UserError(f"cannot write {target}: {e.strerror}") from None


__all__ = [
    "DEFAULT_WINDOW",
    "PreviewFace",
    "PreviewInfo",
    "PreviewResult",
    "check_output",
    "default_preview_path",
    "draw_overlay",
    "mask_outline",
    "parse_timestamp",
    "preview_frame",
    "render_preview",
    "save_preview",
    "track_colour",
]
