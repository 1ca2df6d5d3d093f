"""The streaming face-restoration engine: decode -> track -> align -> restore -> composite -> encode.

Data flows one way, in small typed records:

    DecodedFrame --(FaceTracker)--> FramePlan(frame, faces: list[FacePlan])
        --(TrackStyler: per-track noise, pinned memory slot, strength)-->
        --(FaceRenderer: warp, RMM restore, detail band, stabiliser, masks; the detail is added
          to the upscaled frame by composite.composite_faces)--> VideoWriter

Per track: one noise vector (seeded from the run seed and the track id), one memory slot and one
strength, chosen when the track first appears (from its first confident crops: top-1 retrieval
on their mean query; strength given or measured, ``rmmvideo.video.strength``), and a temporal
stabiliser of its restored crops (``rmmvideo.video.stabilise``). ``temporal="frame"`` draws fresh
noise, retrieves per frame and does not stabilise, for comparison.

Two-pass use (segment parallelism): ``analyze_video`` runs decode + track + slot pinning over the
whole file and returns a ``TrackTable``; ``render_video`` renders any pts range from that table.
A frame's pixels depend only on the frame, its table entry and (stabiliser) the same track's
3 previous frames, which a segment renders first without writing them, so segments rendered in parallel
equal a single pass (``restore_video`` streams both passes together) up to float rounding: the
model's convolutions differ by ~1e-7 with the batch's size, so a pixel may differ by one level.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from rmmvideo.errors import UserError
from rmmvideo.video.io import (
    DecodedFrame,
    VideoInfo,
    VideoWriter,
    batched,
    decode_frames,
    probe,
)
from rmmvideo.video.io_decode import OnDamage
from rmmvideo.video.stabilise import DEFAULT_WINDOW, TemporalStabiliser

if TYPE_CHECKING:  # heavy modules, imported lazily at run time
    from rmmvideo.models.rmm import RMM
    from rmmvideo.video.archive import FrameView
    from rmmvideo.video.detect import DetectorKind, FaceDetector
    from rmmvideo.video.track import FaceTracker, FrameFaces

Temporal = Literal["track", "frame"]
Strength = float | Literal["auto"]


# ----------------------------------------------------------------------------- options, records


@dataclass
class RestoreOptions:
    """Options shared by ``run``, ``preview``, ``batch`` (defaults = the CLI's defaults)."""

    scale: float = 2.0
    weights: str | None = None  # None = bundled default weights
    device: str = "cpu"
    detector: DetectorKind = "auto"
    models_dir: str | None = None  # face-alignment weights folder (offline installs)
    parser: str | None = None  # face-parsing (BiSeNet) checkpoint; None = landmark mask
    temporal: Temporal = "track"
    strength: Strength = "auto"  # restoration weight per track: "auto" or 0..1 (0 = plain upscale)
    seed: int = 0
    detect_every: int = 2
    batch_size: int = 8  # frames per render batch
    codec: str = "libx264"
    crf: int = 18
    preset: str = "medium"
    bit_depth: int | None = None  # None: 10 for >8-bit input, else 8
    threads: int = 0  # torch CPU threads (0 = torch's default)
    quiet: bool = False
    on_damage: OnDamage = "warn"  # damaged input: "warn" (keep every decodable frame, report spans) | "error"
    deinterlace: str = "auto"  # auto | off | frame | field (rmmvideo.video.archive)
    sar: str = "square"  # square | keep: output pixel aspect for anamorphic input

    def __post_init__(self) -> None:
        if self.deinterlace not in ("auto", "off", "frame", "field"):
            raise UserError(f"--deinterlace must be auto, off, frame or field, got {self.deinterlace!r}")
        if self.sar not in ("square", "keep"):
            raise UserError(f"--sar must be 'square' or 'keep', got {self.sar!r}")
        if not self.scale > 0 or self.scale > 16:
            raise UserError(f"--scale must be in (0, 16], got {self.scale}")
        if self.strength != "auto" and not (isinstance(self.strength, (int, float))
                                            and 0.0 <= float(self.strength) <= 1.0):
            raise UserError(f"--strength must be 'auto' or a number in [0, 1], got {self.strength!r}")
        if self.temporal not in ("track", "frame"):
            raise UserError(f"--temporal must be 'track' or 'frame', got {self.temporal!r}")
        if self.detect_every < 1:
            raise UserError(f"--detect-every must be >= 1, got {self.detect_every}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.on_damage not in ("warn", "error"):
            raise UserError(f"on_damage must be 'warn' or 'error', got {self.on_damage!r}")


@dataclass(frozen=True)
class FacePlan:
    """One face to restore in one frame: its track and (smoothed) landmarks in frame pixels."""

    track_id: int
    points5: np.ndarray  # (5, 2) float64
    landmarks68: np.ndarray  # (68, 2) float64
    detected: bool  # detected in this frame (vs propagated/interpolated)


@dataclass
class FramePlan:
    frame: DecodedFrame
    faces: list[FacePlan]


@dataclass
class TrackStyle:
    """Per-track conditioning: the noise seed, the pinned memory slot (-1: none) and the
    restoration strength in [0, 1] (how much of the restored detail is added to the upscale)."""

    noise_seed: int
    slot: int
    strength: float = 1.0


@dataclass
class RunSummary:
    input: str
    output: str
    frames: int
    faces: int
    tracks: int
    seconds: float
    detector: str = ""
    strengths: list[float] = field(default_factory=list)  # each track's restoration strength
    damage: str = ""  # damaged input kept with on_damage="warn": problems and damaged spans

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return (f"{self.frames} frames, {self.faces} faces, {self.tracks} tracks in "
                f"{self.seconds:.1f} s ({self.fps:.2f} frames/s) -> {self.output}")


def track_noise_seed(run_seed: int, track_id: int) -> int:
    """Deterministic 63-bit seed for a track's noise vector."""
    h = hashlib.sha256(f"rmmvideo-noise:{run_seed}:{track_id}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def default_output_path(input: str | os.PathLike, scale: float) -> Path:
    """``clip.mp4`` -> ``clip.rmm-x2.mp4`` beside the input (never the input itself)."""
    p = Path(input)
    tag = f"{scale:g}".replace(".", "_")
    suffix = p.suffix.lower() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".m4v") else ".mp4"
    return p.with_name(f"{p.stem}.rmm-x{tag}{suffix}")


# ----------------------------------------------------------------------------- components


@dataclass
class Components:
    """What the engine needs, built once per run (or passed in by a caller that reuses them)."""

    model: RMM  # eval mode, on `device`
    detector: FaceDetector | None  # None only where no detection is needed (aligned stills)
    detector_reason: str
    parser: torch.nn.Module | None
    device: torch.device

    @property
    def detector_name(self) -> str:
        return self.detector.name if self.detector is not None else ""


def build_components(options: RestoreOptions, log: Callable[[str], None] | None = None) -> Components:
    """Load the weights, the face detector and the optional parser named by ``options``."""
    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.detect import make_detector

    device = _device(options.device)
    model = from_pretrained(options.weights, device=device)
    detector, reason = make_detector(options.detector, device=device, models_dir=options.models_dir)
    if log is not None:
        log(f"face detector: {detector.name} ({reason})")
    parser = None
    if options.parser:
        from rmmvideo.models.face_parser import load_face_parser

        parser = load_face_parser(options.parser).to(device).eval()
    return Components(model, detector, reason, parser, device)


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return dev


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
        strength: "auto" or a fixed weight in [0, 1].
        scale: the output's upscale factor (auto strength needs it).
    """

    def __init__(self, model: RMM, seed: int, pin_frames: int = 3,
                 styles: dict[int, TrackStyle] | None = None, strength: Strength = "auto",
                 scale: float = 2.0) -> None:
        self.model = model
        self.seed = seed
        self.pin_frames = pin_frames
        self.strength = strength
        self.scale = scale
        self.styles: dict[int, TrackStyle] = dict(styles or {})
        self._noise: dict[int, torch.Tensor] = {}

    def pin(self, track_ids: Sequence[int], crops: torch.Tensor, detected: Sequence[bool],
            crop_scale: torch.Tensor | None = None) -> None:
        """Give a style to every track in ``track_ids`` that has none yet.

        Args:
            track_ids: (N,) track of each crop, in frame order.
            crops: (N, 3, S, S) aligned crops in [0, 1].
            detected: (N,) whether the crop's landmarks come from a detection (confident).
            crop_scale: (N,) crop pixels per frame pixel of each crop (needed for auto strength).
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
            style.strength = self._strength(None if crop_scale is None else crop_scale[conf])

    def _strength(self, crop_scale: torch.Tensor | None) -> float:
        """The track's strength: the fixed one, or the weights' calibrated one for its crop scale."""
        from rmmvideo.video.strength import auto_strength, effective_scale

        if self.strength != "auto":
            return float(self.strength)
        if crop_scale is None:
            raise ValueError("auto strength needs the crops' scale (crop pixels per frame pixel)")
        return auto_strength(self.model.config, effective_scale(crop_scale, self.scale))

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

        Each face adds ``strength * mask * detail`` to the plain upscale, where ``detail`` is the
        restoration's detail (colour and shading stay the input's), stabilised along the track
        in ``temporal="track"`` mode (:mod:`rmmvideo.video.stabilise`); faces of strength 0 are
        left untouched."""
        from rmmvideo.video.composite import composite_faces, restoration_detail
        from rmmvideo.video.upscale import upscale_images

        dev = self.comps.device
        images = np.stack([p.frame.image for p in plans])
        canvas = upscale_images(images, self.options.scale, dev)
        fb = self.prepare(plans, images)
        if fb is None:
            return canvas
        self.pin_styles(fb)
        strength = torch.tensor([self.styler.styles[f.track_id].strength for _, f in fb.items],
                                dtype=fb.crops.dtype, device=dev)
        if self.record:
            self.last = RenderRecord(list(fb.items), fb.mats.detach(),
                                     self._masks(fb.crops, fb.items, fb.mats).detach(), strength.tolist())
        keep = torch.nonzero(strength > 0).flatten()
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
        masks = self._masks(restored, items, mats) * strength[keep].view(-1, 1, 1, 1)
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
                        crop_scale=affine_scale(fb.mats.to(torch.float64)))

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
    masks: torch.Tensor  # (N, 1, S, S) paste masks before the strength weighting
    strengths: list[float]  # (N,) each face's strength (0: left as the plain upscale)


@dataclass
class _FaceBatch:
    items: list[tuple[int, FacePlan]]  # (frame position in the batch, face)
    mats: torch.Tensor  # (N, 2, 3) frame -> crop
    crops: torch.Tensor  # (N, 3, S, S) in [0, 1]


def _warp(frames: torch.Tensor, fidx: torch.Tensor, mats: torch.Tensor, size: int) -> torch.Tensor:
    from rmmvideo.video.align import warp_to_crops

    return warp_to_crops(frames, fidx, mats, size).clamp_(0, 1)


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
                "styles": {str(t): [s.noise_seed, s.slot, s.strength] for t, s in self.styles.items()}}
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
        table.styles = {int(t): TrackStyle(int(v[0]), int(v[1]), float(v[2]) if len(v) > 2 else 1.0)
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


def _view(info: VideoInfo, options: RestoreOptions, log: Callable[[str], None] | None) -> FrameView:
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
    view = _view(info, options, log)
    bar: _Progress | None = None  # started once the writer has said what it does with the audio
    from rmmvideo.video.io_decode import DamageReport

    damage = DamageReport()
    frames = decode_frames(info.path, high_bit_depth=deep, max_frames=max_frames,
                           prefetch_frames=8, on_damage=options.on_damage, damage=damage, view=view)
    n = 0
    try:
        with VideoWriter.for_input(info, target, options.scale, view=view, codec=options.codec, crf=options.crf,
                                   preset=options.preset, bit_depth=bit_depth) as writer:
            for note in writer.audio_notes:
                log(note)
            bar = _Progress(info.frame_count if max_frames is None else max_frames, options.quiet, "restoring")
            for batch in batched(plan_frames(frames, tracker, options.batch_size), options.batch_size):
                out = renderer.render(batch)
                for plan, image in zip(batch, out):
                    writer.write(image, plan.frame.pts)
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
                         [s.strength for _, s in sorted(styler.styles.items())])
    summary.damage = damage.line()
    log(summary.line())
    return summary


def analyze_video(input: str | os.PathLike, options: RestoreOptions | None = None,
                  components: Components | None = None) -> TrackTable:
    """Pass 1 of the two-pass mode: track faces over the whole file and pin each track's style."""
    options = options or RestoreOptions()
    info = probe(input)
    comps = components or build_components(options, _log(options))
    tracker = make_tracker(comps.detector, options)
    styler = TrackStyler(comps.model, options.seed, strength=options.strength, scale=options.scale)
    renderer = FaceRenderer(comps, options, styler, gray=info.is_gray)
    table = TrackTable()
    frames = decode_frames(info.path, prefetch_frames=8, on_damage=options.on_damage, view=_view(info, options, _log(options)))
    progress = _Progress(info.frame_count, options.quiet, "analysing")
    try:
        for batch in batched(plan_frames(frames, tracker, options.batch_size), options.batch_size):
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
    view = _view(info, options, None)
    from rmmvideo.video.io_decode import DamageReport

    damage = DamageReport()
    frames = decode_frames(info.path, high_bit_depth=deep, prefetch_frames=8, on_damage=options.on_damage,
                           damage=damage, view=view)

    warm: deque[FramePlan] = deque(maxlen=renderer.stabiliser.window)

    def planned() -> Iterator[FramePlan]:
        for f in frames:
            if start_pts is not None and f.pts < start_pts:
                if warm.maxlen:
                    warm.append(FramePlan(f, table.faces.get(f.pts, [])))
                continue
            if end_pts is not None and f.pts >= end_pts:
                break
            yield FramePlan(f, table.faces.get(f.pts, []))

    n = 0
    tracks: set[int] = set()
    try:
        with VideoWriter.for_input(info, output, options.scale, view=view, codec=options.codec, crf=options.crf,
                                   preset=options.preset, bit_depth=bit_depth,
                                   copy_audio=audio, copy_subtitles=audio) as writer:
            for batch in batched(planned(), options.batch_size):
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
                      damage=damage.line())
