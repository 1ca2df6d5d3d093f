"""The streaming face-restoration driver: decode -> track -> align -> restore -> composite -> encode.

Data flows one way, in small typed records:

    DecodedFrame --(FaceTracker, plan_frames)--> FramePlan(frame, faces: list[FacePlan])
        --(deblock.deblock_plans, --deblock: codec artefacts removed from each face region)-->
        --(fuse.fuse_plans: each face region averaged with the track's motion-compensated
          neighbours, +-radius frames)-->
        --(render.TrackStyler: per-track noise, pinned memory slot, strength)-->
        --(render.FaceRenderer: warp, RMM restore, detail band, stabiliser, masks; the detail is added
          to the upscaled frame by composite.composite_faces)--> VideoWriter

This module is the driver: the tracking plans (``make_tracker``, ``plan_frames``), the
``TrackTable`` of the two-pass mode, progress, and ``restore_video``, ``analyze_video`` and
``render_video``. What they run with (``RestoreOptions``, ``Components``) is
``rmmvideo.video.options``; how a batch of frames is rendered (per-track styles, restore, paste)
is ``rmmvideo.video.render``.

Two-pass use (segment parallelism): ``analyze_video`` runs decode + track + slot pinning over the
whole file and returns a ``TrackTable``; ``render_video`` renders any pts range from that table.
A frame's pixels depend only on the frame, its table entry, (fusion) the ``--fuse`` frames before
and after it and (stabiliser) the same track's 3 previous frames; a segment decodes that context
and renders the 3 frames before it without writing them, so segments rendered in parallel
equal a single pass (``restore_video`` streams both passes together) up to float rounding: the
model's convolutions differ by ~1e-7 with the batch's size, so a pixel may differ by one level.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.video.io import (
    DecodedFrame,
    VideoInfo,
    VideoWriter,
    batched,
    decode_frames,
    probe,
)
from rmmvideo.video.deblock import QP_WINDOW, deblock_plans, deblocker_for, needs_qp
from rmmvideo.video.fuse import fuse_plans, fusion_for
from rmmvideo.video.options import Components, RestoreOptions, build_components
from rmmvideo.video.render import (
    FacePlan,
    FaceRenderer,
    FramePlan,
    TrackStyle,
    TrackStyler,
)
from rmmvideo.video.stabilise import DEFAULT_WINDOW
from rmmvideo.video.strength import Strength

if TYPE_CHECKING:  # heavy modules, imported lazily at run time
    from rmmvideo.video.archive import FrameView
    from rmmvideo.video.detect import FaceDetector
    from rmmvideo.video.track import FaceTracker, FrameFaces


# ----------------------------------------------------------------------------- records


@dataclass
class RunSummary:
    input: str
    output: str
    frames: int
    faces: int
    tracks: int
    seconds: float
    detector: str = ""
    strengths: list[Strength] = field(default_factory=list)  # each track's restoration strength
    damage: str = ""  # damaged input kept with on_damage="warn": problems and damaged spans
    fused: int = 0  # faces fused with their neighbouring frames (rmmvideo.video.fuse)
    deblocked: int = 0  # face regions cleaned of codec artefacts (rmmvideo.video.deblock)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        """One line for the user, e.g. ``90 frames, 84 faces restored, 168 fused across frames, 2
        tracks (strength 0.38/0.75 on 1, 0 = the fused upscale on 1) in 12.0 s (7.50 frames/s) ->
        out.mp4``."""
        fused = f"{self.fused} fused across frames, " if self.fused else ""
        cleaned = f"{self.deblocked} cleaned of codec artefacts, " if self.deblocked else ""
        return (f"{_count(self.frames, 'frame')}, {_count(self.faces, 'face')} restored, {cleaned}{fused}"
                f"{_count(self.tracks, 'track')}{self.strength_note()} in {self.seconds:.1f} s "
                f"({self.fps:.2f} frames/s) -> {self.output}")

    def strength_note(self) -> str:
        """`` (strength 0.38/0.75 on 1, 0 = the plain upscale on 2)``: how many tracks got each
        strength (the three most common, then the rest), so a run whose faces all stayed the
        plain upscale (or, with fusion, the upscale of the fused frames) says so; empty without
        tracks."""
        if not self.strengths:
            return ""
        done = [w for w, n in (("cleaned", self.deblocked), ("fused", self.fused)) if n]
        zero = f"0 = the {', '.join(done)} upscale" if done else "0 = the plain upscale"
        counts = Counter(zero if s.is_zero else str(s) for s in self.strengths)
        top = counts.most_common(3)
        parts = [f"{name} on {k}" for name, k in top]
        rest = len(self.strengths) - sum(k for _, k in top)
        if rest:
            parts.append(f"others on {rest}")
        return f" (strength {', '.join(parts)})"


def _count(n: int, noun: str) -> str:
    """``1 track``, ``2 tracks``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def default_output_path(input: str | os.PathLike, scale: float) -> Path:
    """``clip.mp4`` -> ``clip.rmm-x2.mp4`` beside the input (never the input itself)."""
    p = Path(input)
    tag = f"{scale:g}".replace(".", "_")
    suffix = p.suffix.lower() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".m4v") else ".mp4"
    return p.with_name(f"{p.stem}.rmm-x{tag}{suffix}")


# ----------------------------------------------------------------------------- tracking -> plans


def make_tracker(detector: FaceDetector | None, options: RestoreOptions) -> FaceTracker:
    """The face tracker the engine uses (``rmmvideo.video.track.FaceTracker``)."""
    from rmmvideo.video.track import FaceTracker

    if detector is None:
        raise ValueError("tracking needs a face detector (these components were built without one)")
    return FaceTracker(detector, detect_every=options.detect_every)


def _detector_image(image: np.ndarray) -> np.ndarray:
    """Detectors take 8-bit RGB: deep (uint16) frames are reduced for them only."""
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


def plan_frames(frames: Iterable[DecodedFrame], tracker: FaceTracker, chunk: int = 8) -> Iterator[FramePlan]:
    """Run the tracker over a frame stream; yield each frame with its final faces, in order.

    Memory: the frames the tracker has not finalised yet (its bounded lag) plus one chunk."""
    pending: dict[int, DecodedFrame] = {}
    buf: list[tuple[int, np.ndarray]] = []

    def emit(done: Iterable[FrameFaces]) -> Iterator[FramePlan]:
        for ff in done:
            frame = pending.pop(ff.index)
            faces = [
                FacePlan(int(t.track_id), np.asarray(t.points5, np.float64),
                         np.asarray(t.landmarks68, np.float64), bool(t.detected))
                for t in ff.faces
            ]
            yield FramePlan(frame, faces)

    for f in frames:
        pending[f.index] = f
        buf.append((f.index, _detector_image(f.image)))
        if len(buf) >= chunk:
            yield from emit(tracker.push(buf))
            buf = []
    if buf:
        yield from emit(tracker.push(buf))
    yield from emit(tracker.flush())
    if pending:
        raise RuntimeError(f"tracker did not finalise frames {sorted(pending)[:5]}...")


# ----------------------------------------------------------------------------- track table


@dataclass
class TrackTable:
    """Result of the analysis pass: per frame (by pts) its faces, and each track's style."""

    faces: dict[int, list[FacePlan]] = field(default_factory=dict)  # pts -> faces
    styles: dict[int, TrackStyle] = field(default_factory=dict)
    frames: int = 0

    def save(self, path: str | os.PathLike) -> None:
        """Write as .npz (atomically)."""
        pts, track, det, lm = [], [], [], []
        for p, faces in self.faces.items():
            for face in faces:
                pts.append(p)
                track.append(face.track_id)
                det.append(face.detected)
                lm.append(face.landmarks68)
        meta = {"frames": self.frames, "frame_pts": sorted(self.faces),
                "styles": {str(t): [s.noise_seed, s.slot, s.strength.to_json()] for t, s in self.styles.items()}}
        from rmmvideo.video.safe_output import atomic_output

        with atomic_output(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, pts=np.asarray(pts, np.int64), track=np.asarray(track, np.int64),
                detected=np.asarray(det, bool),
                landmarks=np.asarray(lm, np.float64).reshape(-1, 68, 2),
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrackTable:
        from rmmvideo.video.align import five_points

        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            table = cls(frames=int(meta["frames"]))
            table.faces = {int(p): [] for p in meta["frame_pts"]}
            for p, t, d, lm in zip(z["pts"], z["track"], z["detected"], z["landmarks"]):
                table.faces[int(p)].append(FacePlan(int(t), five_points(lm), lm, bool(d)))
        table.styles = {int(t): TrackStyle(int(v[0]), int(v[1]), Strength.of(v[2]) if len(v) > 2
                                           else Strength.uniform(1.0))
                        for t, v in meta["styles"].items()}
        return table


# ----------------------------------------------------------------------------- drivers


class _Progress:
    """tqdm bar (frames/s, ETA) on stderr, or nothing when quiet."""

    def __init__(self, total: int | None, quiet: bool, desc: str) -> None:
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc=desc, file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def update(self, n: int, faces: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(faces=faces, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _log(options: RestoreOptions) -> Callable[[str], None]:
    return (lambda _m: None) if options.quiet else (lambda m: print(m, file=sys.stderr))


def _bit_depth(options: RestoreOptions, info: VideoInfo) -> tuple[int, bool]:
    """(output bit depth, decode at 16 bits)."""
    bd = options.bit_depth or (10 if info.bit_depth > 8 else 8)
    return bd, bd > 8 and info.bit_depth > 8


def decode_view(info: VideoInfo, options: RestoreOptions, log: Callable[[str], None] | None) -> FrameView:
    """The decode view (deinterlacing, square pixels) of ``rmmvideo.video.archive``; logs why."""
    from rmmvideo.video.archive import plan_view

    view = plan_view(info, options.deinterlace, options.sar)
    if log is not None:
        log(f"{info.path.name}: {view.reason}")
    return view


def restore_video(input: str | os.PathLike, output: str | os.PathLike | None = None,
                  options: RestoreOptions | None = None, components: Components | None = None,
                  max_frames: int | None = None,
                  progress: Callable[[int], None] | None = None) -> RunSummary:
    """Restore the faces of a video in one streaming pass (``rmmvideo run``).

    Args:
        input: any video FFmpeg reads.
        output: target file (None: beside the input, see ``default_output_path``). Written to a
            temporary file and renamed on success; never the input.
        options: see ``RestoreOptions``.
        components: prebuilt model/detector (reused across files by ``batch``).
        max_frames: only the first N frames (benchmarks, tests); audio is still copied.
        progress: called with the number of frames written so far after each batch.
    Returns:
        RunSummary (frames, faces, tracks, seconds).
    """
    options = options or RestoreOptions()
    log = _log(options)
    t0 = time.perf_counter()
    info = probe(input)
    target = Path(output) if output is not None else default_output_path(info.path, options.scale)
    comps = components or build_components(options, log)
    bit_depth, deep = _bit_depth(options, info)
    tracker = make_tracker(comps.detector, options)
    styler = TrackStyler(comps.model, options.seed, strength=options.strength, scale=options.scale)
    renderer = FaceRenderer(comps, options, styler, gray=info.is_gray)
    fusion = fusion_for(options)
    view = decode_view(info, options, log)
    bar: _Progress | None = None  # started once the writer has said what it does with the audio
    from rmmvideo.video.io_decode import DamageReport

    damage = DamageReport()
    frames = decode_frames(info.path, high_bit_depth=deep, max_frames=max_frames, prefetch_frames=8,
                           on_damage=options.on_damage, damage=damage, view=view, quantisers=needs_qp(options))
    n, quantised = 0, 0  # frames written; of them, frames whose decoder gave the codec's quantisers
    try:
        with VideoWriter.for_input(info, target, options.scale, view=view, codec=options.codec, crf=options.crf,
                                   preset=options.preset, bit_depth=bit_depth) as writer:
            for note in writer.audio_notes:
                log(note)
            bar = _Progress(info.frame_count if max_frames is None else max_frames, options.quiet, "restoring")
            deblocker = deblocker_for(options, comps)
            plans = fuse_plans(deblock_plans(plan_frames(frames, tracker, options.batch_size), deblocker), fusion)
            for batch in batched(plans, options.batch_size):
                out = renderer.render(batch)
                for plan, image in zip(batch, out):
                    writer.write(image, plan.frame.pts)
                    quantised += plan.frame.qp is not None
                n += len(batch)
                bar.update(len(batch), renderer.faces_restored)
                if progress is not None:
                    progress(n)
    finally:
        if bar is not None:
            bar.close()
        frames.close()  # type: ignore[attr-defined]
    summary = RunSummary(str(info.path), str(writer.path), n, renderer.faces_restored,
                         len(styler.styles), time.perf_counter() - t0, comps.detector_name,
                         [s.strength for _, s in sorted(styler.styles.items())], fused=fusion.faces_fused,
                         deblocked=deblocker.faces_cleaned if deblocker is not None else 0)
    summary.damage = damage.line()
    automatic = [f"--{o} auto" for o, v in (("deblock", options.deblock), ("fuse", options.fuse)) if v == "auto"]
    if automatic and summary.tracks and not quantised:
        log(f"{info.path.name}: {info.codec} gives no codec quantisers (H.264 does), so {' and '.join(automatic)} "
            "left its faces as decoded; --deblock on and --fuse 2 clean them without")
    log(summary.line())
    return summary


def analyze_video(input: str | os.PathLike, options: RestoreOptions | None = None,
                  components: Components | None = None) -> TrackTable:
    """Pass 1 of the two-pass mode: track faces over the whole file and pin each track's style.

    A style is pinned from the crops of the batch where its track first appears (and the
    weights' curve), so only frames showing a track not pinned yet are cleaned, fused and
    cropped: the others' pixels are never looked at here (pass 2 cleans and fuses every frame)."""
    options = options or RestoreOptions()
    info = probe(input)
    comps = components or build_components(options, _log(options))
    tracker = make_tracker(comps.detector, options)
    styler = TrackStyler(comps.model, options.seed, strength=options.strength, scale=options.scale)
    renderer = FaceRenderer(comps, options, styler, gray=info.is_gray)
    table = TrackTable()
    frames = decode_frames(info.path, prefetch_frames=8, on_damage=options.on_damage,
                           view=decode_view(info, options, _log(options)), quantisers=needs_qp(options))
    progress = _Progress(info.frame_count, options.quiet, "analysing")
    try:
        def unpinned(plan: FramePlan) -> bool:
            return any(f.track_id not in styler.styles for f in plan.faces)

        plans = fuse_plans(deblock_plans(plan_frames(frames, tracker, options.batch_size),
                                         deblocker_for(options, comps), needed=unpinned),
                           fusion_for(options), needed=unpinned)
        for batch in batched(plans, options.batch_size):
            if any(unpinned(p) for p in batch):
                with torch.inference_mode():
                    fb = renderer.prepare(batch)
                    if fb is not None:
                        renderer.pin_styles(fb)
            for plan in batch:
                table.faces[plan.frame.pts] = plan.faces
            table.frames += len(batch)
            progress.update(len(batch), 0)
    finally:
        progress.close()
        frames.close()  # type: ignore[attr-defined]
    table.styles = dict(styler.styles)
    return table


def context_before(options: RestoreOptions) -> int:
    """Frames before a segment's first that ``render_video`` reads: the stabiliser's window
    (``--temporal track``), before each of those the fusion's radius, and before each of
    those the frames whose quantisers ``--deblock`` averages."""
    qp_window = QP_WINDOW if needs_qp(options, pins=False) else 0
    return (DEFAULT_WINDOW if options.temporal == "track" else 0) + fusion_for(options).radius + qp_window


def render_video(input: str | os.PathLike, output: str | os.PathLike, options: RestoreOptions,
                 table: TrackTable, start_pts: int | None = None, end_pts: int | None = None,
                 audio: bool = True, components: Components | None = None,
                 progress: Callable[[int], None] | None = None) -> RunSummary:
    """Pass 2: render frames with ``start_pts <= pts < end_pts`` from a ``TrackTable``.

    With ``audio=False`` (segments) only the video stream is written; the joiner adds audio.
    ``progress`` is called with the number of frames written so far after each batch."""
    log = _log(options)
    t0 = time.perf_counter()
    info = probe(input)
    comps = components or build_components(options, log)
    bit_depth, deep = _bit_depth(options, info)
    styler = TrackStyler(comps.model, options.seed, styles=table.styles, strength=options.strength,
                         scale=options.scale)
    renderer = FaceRenderer(comps, options, styler, gray=info.is_gray)
    view = decode_view(info, options, None)
    from rmmvideo.video.io_decode import DamageReport

    damage = DamageReport()
    frames = decode_frames(info.path, high_bit_depth=deep, prefetch_frames=8, on_damage=options.on_damage,
                           damage=damage, view=view, quantisers=needs_qp(options, pins=False))

    fusion = fusion_for(options)
    warm: deque[FramePlan] = deque(maxlen=renderer.stabiliser.window)

    def planned() -> Iterator[FramePlan]:
        """Plans of the range with their context: the stabiliser's window of frames before it,
        each with the fusion's radius before it, and the fusion's radius after it."""
        before: deque[FramePlan] = deque(maxlen=context_before(options))
        after = 0
        for f in frames:
            plan = FramePlan(f, table.faces.get(f.pts, []))
            if start_pts is not None and f.pts < start_pts:
                before.append(plan)
                continue
            yield from before
            before.clear()
            if end_pts is not None and f.pts >= end_pts:
                if after >= fusion.radius:
                    break
                after += 1
            yield plan

    fused = 0  # faces fused in the range (the context's are not counted)

    def in_range() -> Iterator[FramePlan]:
        nonlocal fused
        seen = fusion.faces_fused
        for plan in fuse_plans(deblock_plans(planned(), deblocker_for(options, comps)), fusion):  # the count moved while this plan was fused
            here, seen = fusion.faces_fused - seen, fusion.faces_fused
            if start_pts is not None and plan.frame.pts < start_pts:
                warm.append(plan)  # the stabiliser's history, rendered but not written
            elif end_pts is None or plan.frame.pts < end_pts:
                fused += here
                yield plan

    n = 0
    tracks: set[int] = set()
    try:
        with VideoWriter.for_input(info, output, options.scale, view=view, codec=options.codec, crf=options.crf,
                                   preset=options.preset, bit_depth=bit_depth,
                                   copy_audio=audio, copy_subtitles=audio) as writer:
            for batch in batched(in_range(), options.batch_size):
                if warm:  # the stabiliser's history: the frames just before the segment, not written
                    renderer.render(list(warm))
                    renderer.faces_restored = 0
                    warm.clear()
                out = renderer.render(batch)
                for plan, image in zip(batch, out):
                    writer.write(image, plan.frame.pts)
                    tracks.update(f.track_id for f in plan.faces)
                n += len(batch)
                if progress is not None:
                    progress(n)
    finally:
        frames.close()  # type: ignore[attr-defined]
    return RunSummary(str(info.path), str(writer.path), n, renderer.faces_restored, len(tracks),
                      time.perf_counter() - t0, comps.detector_name,
                      [styler.styles[t].strength for t in sorted(tracks) if t in styler.styles],
                      damage=damage.line(), fused=fused)
