"""Still images: restore the faces of photos, or restore crops that are already aligned.

The same stages as the video engine (``rmmvideo.video.pipeline``), without tracking:

- whole photos (:func:`restore_image`): detect faces with the run's detector, treat each face
  as its own track (id = its rank left to right, so its noise is seeded from the run seed and
  that id exactly as a video track's is, and its memory slot is pinned from its own crop), then
  align, restore, mask and paste back over the photo upscaled by ``options.scale`` with
  ``rmmvideo.video.render.FaceRenderer``: the very code path of ``rmmvideo run``;
- aligned crops (:func:`restore_aligned`): each image is taken as a crop already in the
  weights' template geometry, resized (bicubic, antialiased when shrinking; non-square crops
  are stretched) to the model's input ``S x S``, and the restored ``S x S`` crop is returned.

Decisions (``rmmvideo faces``):
- Outputs are always PNG (lossless, 8 bits, RGB or RGBA): a JPEG would blur the restored detail
  again; the output keeps the input's stem (``photo.jpg`` -> ``photo.png``).
- An alpha channel is kept (upscaled with the same bicubic kernel); EXIF orientation is applied
  on load; greyscale photos give greyscale output.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rmmvideo.errors import UserError
from rmmvideo.video.safe_output import atomic_output

if TYPE_CHECKING:  # the pipeline (torch models, detectors) is imported lazily at run time
    from rmmvideo.config import ModelConfig
    from rmmvideo.video.detect import FaceDetector
    from rmmvideo.video.options import Components, RestoreOptions
    from rmmvideo.video.render import FacePlan

# |R-G|, |G-B| (8-bit levels) up to which an RGB photo counts as grey (JPEG chroma noise).
GRAY_TOLERANCE = 4


@dataclass
class StillImage:
    """A loaded image: ``rgb`` (H, W, 3) uint8 upright, ``alpha`` (H, W) uint8 or None, ``gray``."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    gray: bool


@dataclass
class StillResult:
    """What :func:`restore_image` produced: ``image`` (H', W', 3) uint8, ``faces`` the faces
    restored (track id = rank), ``found`` faces the detector found (some may be skipped as
    degenerate)."""

    image: np.ndarray
    faces: list  # list[render.FacePlan]
    found: int


def is_gray(rgb: np.ndarray, tolerance: int = GRAY_TOLERANCE) -> bool:
    """True when every pixel of an (H, W, 3) uint8 image has R ~ G ~ B."""
    x = rgb.astype(np.int16)
    return bool(np.abs(x[..., 0] - x[..., 1]).max() <= tolerance
                and np.abs(x[..., 1] - x[..., 2]).max() <= tolerance)


def load_image(path: str | os.PathLike) -> StillImage:
    """Open any image Pillow reads (EXIF orientation applied; palette, 16-bit, CMYK converted).

    Raises:
        UserError: missing, empty or unreadable file (one line).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"image not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            gray_mode = mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
            alpha = None
            if "A" in im.getbands() or (mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                alpha = np.array(rgba)[..., 3].copy()
                rgb_im = rgba.convert("RGB")
            elif mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                a = np.asarray(im, dtype=np.float64)
                peak = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
                g = np.clip(np.round(a / peak * 255.0), 0, 255).astype(np.uint8)
                rgb_im = Image.fromarray(np.repeat(g[..., None], 3, axis=2))
            else:
                rgb_im = im.convert("RGB")
            rgb = np.array(rgb_im, dtype=np.uint8)  # a writable copy
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise UserError(f"cannot read image {p}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if alpha is not None and (alpha == 255).all():
        alpha = None
    return StillImage(rgb, alpha, gray_mode or is_gray(rgb))


def save_png(path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None) -> Path:
    """Write (H, W, 3) uint8 [+ (H, W) alpha] as PNG through a temporary file renamed on success."""
    from PIL import Image

    target = Path(path)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"save_png: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    arr = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)
    im = Image.fromarray(np.ascontiguousarray(arr), "RGB" if alpha is None else "RGBA")
    return _atomic_save(im, target, "PNG")


def _atomic_save(im: object, target: Path, fmt: str) -> Path:
    with atomic_output(target) as tmp:
        im.save(tmp, format=fmt)  # type: ignore[attr-defined]
    return target


def build_still_components(options: RestoreOptions, need_detector: bool = True,
                           log: Callable[[str], None] | None = None) -> Components:
    """``options.Components`` for stills: as ``build_components``; with ``need_detector=False``
    (aligned crops) the detector is not built (``detector`` None)."""
    from rmmvideo.device import pick_device
    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.options import Components, build_components

    if need_detector:
        return build_components(options, log)
    device = pick_device(options.device)
    model = from_pretrained(options.weights, device=device)
    parser = None
    if options.parser:
        from rmmvideo.models.face_parser import load_face_parser

        parser = load_face_parser(options.parser).to(device).eval()
    return Components(model, None, "not needed for aligned crops", parser, device)


def detect_faces(image: np.ndarray, detector: FaceDetector) -> list[FacePlan]:
    """Faces of one photo as tracks: (H, W, 3) uint8 -> ``list[FacePlan]``, ids 0, 1, ... left
    to right (by box centre), all ``detected=True``."""
    from rmmvideo.video.align import five_points
    from rmmvideo.video.render import FacePlan

    dets = detector.detect([image])[0]
    dets = sorted(dets, key=lambda d: (float(d.box[0] + d.box[2]), float(d.box[1] + d.box[3])))
    return [
        FacePlan(i, np.asarray(five_points(np.asarray(d.landmarks, np.float64)), np.float64),
                 np.asarray(d.landmarks, np.float64), True)
        for i, d in enumerate(dets)
    ]


def restore_image(image: np.ndarray, components: Components, options: RestoreOptions,
                  faces: Sequence | None = None, gray: bool | None = None) -> np.ndarray:
    """Restore the faces of one photo, pasted over the photo upscaled by ``options.scale``.

    Args:
        image: (H, W, 3) uint8 RGB.
        components: ``options.Components`` (model, detector, parser, device).
        options: ``options.RestoreOptions`` (scale, seed, temporal; codec fields unused).
        faces: the faces to restore (``list[FacePlan]``); None = :func:`detect_faces`.
        gray: force greyscale output; None = decided from the pixels.
    Returns:
        (round(H*s), round(W*s), 3) uint8: the plain upscale outside the face masks.
    """
    return restore_image_result(image, components, options, faces, gray).image


def restore_image_result(image: np.ndarray, components: Components, options: RestoreOptions,
                         faces: Sequence | None = None, gray: bool | None = None) -> StillResult:
    """:func:`restore_image` that also says which faces were found and restored."""
    from rmmvideo.video.io import DecodedFrame
    from rmmvideo.video.render import FaceRenderer, FramePlan, TrackStyler

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"restore_image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    if faces is None:
        faces = detect_faces(image, components.detector)
    styler = TrackStyler(components.model, options.seed,
                         strength=options.strength, scale=options.scale)
    renderer = FaceRenderer(components, options, styler,
                            gray=is_gray(image) if gray is None else gray)
    plan = FramePlan(DecodedFrame(0, 0, 0.0, np.ascontiguousarray(image)), list(faces))
    out = renderer.render([plan])[0]
    restored = _usable(list(faces), components.model.config)
    return StillResult(out, restored, len(faces))


def _usable(faces: list[FacePlan], cfg: ModelConfig) -> list[FacePlan]:
    """The faces whose alignment is not degenerate (those ``FaceRenderer`` restores)."""
    from rmmvideo.video.align import align_matrices, crop_scale_ok

    if not faces:
        return []
    pts5 = torch.as_tensor(np.stack([f.points5 for f in faces]), dtype=torch.float64)
    ok = crop_scale_ok(align_matrices(pts5, cfg.template, cfg.size)).tolist()
    return [f for f, k in zip(faces, ok) if k]


def upscale_alpha(alpha: np.ndarray, scale: float) -> np.ndarray:
    """(H, W) uint8 alpha -> upscaled with the frames' bicubic kernel."""
    from rmmvideo.video.upscale import upscale_images

    return upscale_images(np.repeat(alpha[..., None], 3, axis=2), scale)[..., 0]


def resize_to_model(crops: Sequence[np.ndarray], size: int, device: torch.device) -> torch.Tensor:
    """Crops of any sizes (H, W, 3) uint8 -> (N, 3, S, S) float in [0, 1] on ``device`` (bicubic,
    antialiased when shrinking, as ``RMM.restore`` resizes)."""
    import torch.nn.functional as F

    from rmmvideo.video.upscale import images_to_tensor

    out = []
    for c in crops:
        x = images_to_tensor(c, device)
        if tuple(x.shape[-2:]) != (size, size):
            down = x.shape[-2] > size or x.shape[-1] > size
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                              antialias=down).clamp_(0, 1)
        out.append(x)
    return torch.cat(out) if out else torch.zeros((0, 3, size, size), device=device)


@torch.inference_mode()
def restore_aligned(crops: Sequence[np.ndarray], components: Components, options: RestoreOptions,
                    batch_size: int = 8, gray: Sequence[bool] | None = None) -> list[np.ndarray]:
    """Restore crops already in the weights' template geometry.

    Each crop is one track with id 0: noise seeded from ``(options.seed, 0)`` (so a crop's
    result does not depend on the other crops), memory slot by top-1 retrieval on the crop.
    The written crop is ``input + weigh_detail(restoration_detail, strength)`` (the input
    resized to S, as the video compositor adds it); ``options.strength="auto"`` reads the weights' calibration
    curve (:mod:`rmmvideo.video.strength`) at the crop's scale S / size.

    Args:
        crops: (H_i, W_i, 3) uint8 RGB, any sizes (resized to the model's S x S).
        components: ``options.Components``.
        options: ``options.RestoreOptions`` (seed, temporal).
        batch_size: crops per model call.
        gray: per crop, turn the result grey; None = decided from each crop's pixels.
    Returns:
        list of (S, S, 3) uint8 restored crops.
    """
    from rmmvideo.models.rmm import make_noise
    from rmmvideo.video.composite import restoration_detail, to_grey
    from rmmvideo.video.render import track_noise_seed
    from rmmvideo.video.strength import Strength, auto_strength, strength_tensor, weigh_detail
    from rmmvideo.video.upscale import tensor_to_images

    model = components.model
    dev = components.device
    cfg = model.config
    noise = make_noise(track_noise_seed(options.seed, 0), 1, cfg.z_n_dim)[0]
    gray_flags = [is_gray(c) for c in crops] if gray is None else list(gray)
    out: list[np.ndarray] = []
    for i in range(0, len(crops), batch_size):
        part = crops[i:i + batch_size]
        x = resize_to_model(part, cfg.size, dev)
        z = noise.to(dev, x.dtype).expand(len(part), -1).contiguous()
        r = model.restore(x, z, None)
        if options.strength == "auto":  # the output is the crop: f_eff is the crop scale itself
            st = [auto_strength(cfg, cfg.size / max(1, min(c.shape[:2]))) for c in part]
        else:
            st = [Strength.of(options.strength)] * len(part)
        w = strength_tensor(st, x.device, x.dtype)
        y = (x + weigh_detail(restoration_detail(r.x_hr, x), w)).clamp(0, 1)
        grey = torch.tensor(gray_flags[i:i + len(part)], device=y.device)
        if bool(grey.any()):
            y = torch.where(grey[:, None, None, None], to_grey(y), y)
        out.extend(tensor_to_images(y))
    return out


# ----------------------------------------------------------------------------- folders (rmmvideo faces)


@dataclass
class StillsSummary:
    """Outcome of :func:`restore_stills`: outputs written, faces restored, images without a face,
    ``failed`` (path, one-line reason), ``skipped`` (non-image files of a folder)."""

    output: Path
    written: list[Path]
    faces: int
    no_face: list[Path]
    failed: list[tuple[Path, str]]
    skipped: list[Path]
    seconds: float

    def line(self) -> str:
        n = len(self.written) + len(self.failed)
        parts = [f"{len(self.written)} of {n} images written ({self.faces} face{'' if self.faces == 1 else 's'} restored"
                 + (f", {len(self.no_face)} without a face" if self.no_face else "") + ")"]
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.skipped:
            parts.append(f"{len(self.skipped)} non-image files skipped")
        return "; ".join(parts) + f" in {self.seconds:.1f} s -> {self.output}"


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {ext.lower() for ext in Image.registered_extensions()}


def _opens_as_image(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image" for discovery
        return False


def discover_images(input: str | os.PathLike) -> tuple[list[Path], list[Path]]:
    """The images to process and the files skipped.

    A file input is always processed (an unreadable one fails later, with its reason). In a
    folder (top level only, hidden files ignored, sorted by name): files with an image suffix
    Pillow knows are processed (and fail later when unreadable); other files are processed when
    Pillow opens them, else skipped.

    Raises:
        UserError: the input does not exist.
    """
    p = Path(input)
    if p.is_file():
        return [p], []
    if not p.is_dir():
        raise UserError(f"input not found: {p}")
    suffixes = _image_suffixes()
    images: list[Path] = []
    skipped: list[Path] = []
    for f in sorted(p.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.suffix.lower() in suffixes or _opens_as_image(f):
            images.append(f)
        else:
            skipped.append(f)
    return images, skipped


def output_names(inputs: Sequence[Path], folder: Path) -> dict[Path, Path]:
    """Input -> ``folder / (stem + ".png")``; inputs sharing a stem get ``name + ".png"`` instead
    (``a.jpg`` -> ``a.jpg.png``) so that no output overwrites another.

    Raises:
        UserError: an output would overwrite an input.
    """
    stems: dict[str, int] = {}
    for f in inputs:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    out = {f: folder / (f.stem + ".png" if stems[f.stem] == 1 else f.name + ".png") for f in inputs}
    resolved = {f.resolve() for f in inputs}
    for o in out.values():
        if o.resolve() in resolved:
            raise UserError(f"output {o} would overwrite an input: choose another output folder")
    return out


def _log_fn(quiet: bool) -> Callable[[str], None]:
    return (lambda _m: None) if quiet else (lambda m: print(m, file=sys.stderr))


def restore_stills(input: str | os.PathLike, output: str | os.PathLike, options: RestoreOptions,
                   aligned: bool = False, components: Components | None = None,
                   batch_size: int = 8) -> StillsSummary:
    """Restore an image or a folder of images into the folder ``output`` (``rmmvideo faces``).

    Photos: faces detected, restored and pasted over the photo upscaled by ``options.scale``; a
    photo with no face gives the plain upscale (with a note). ``aligned``: each image is an
    aligned crop; the restored crop (model size) is written. Every output is a PNG named after
    the input's stem, written through a temporary file. Unreadable images are reported in
    ``failed`` and the others go on.

    Raises:
        UserError: missing input, an output folder that is a file, an output that would
            overwrite an input, unusable weights/detector/device.
    """
    import time

    t0 = time.perf_counter()
    log = _log_fn(bool(options.quiet))
    warn = _log_fn(False)
    images, skipped = discover_images(input)
    out_dir = Path(output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} exists and is not a folder")
    for f in skipped:
        log(f"note: {f.name}: not an image, skipped")
    names = output_names(images, out_dir)
    summary = StillsSummary(out_dir, [], 0, [], [], skipped, 0.0)
    if not images:
        summary.seconds = time.perf_counter() - t0
        return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    comps = components or build_still_components(options, need_detector=not aligned, log=log)

    def fail(path: Path, reason: str) -> None:
        summary.failed.append((path, reason))
        warn(f"error: {path.name}: {reason}")

    if aligned:
        for i in range(0, len(images), batch_size):
            group: list[tuple[Path, StillImage]] = []
            for f in images[i:i + batch_size]:
                try:
                    group.append((f, load_image(f)))
                except UserError as e:
                    fail(f, str(e))
            if not group:
                continue
            crops = restore_aligned([g.rgb for _, g in group], comps, options, batch_size,
                                    gray=[g.gray for _, g in group])
            for (f, g), crop in zip(group, crops):
                alpha = None
                if g.alpha is not None:
                    alpha = _resize_alpha(g.alpha, crop.shape[0])
                summary.written.append(save_png(names[f], crop, alpha))
                summary.faces += 1
                log(f"{f.name} -> {names[f]} (aligned crop, {crop.shape[1]}x{crop.shape[0]})")
    else:
        for f in images:
            try:
                still = load_image(f)
            except UserError as e:
                fail(f, str(e))
                continue
            res = restore_image_result(still.rgb, comps, options, gray=still.gray)
            alpha = upscale_alpha(still.alpha, options.scale) if still.alpha is not None else None
            summary.written.append(save_png(names[f], res.image, alpha))
            summary.faces += len(res.faces)
            h, w = res.image.shape[:2]
            if not res.faces:
                summary.no_face.append(f)
                log(f"note: {f.name}: no face found, wrote the plain upscale -> {names[f]} ({w}x{h})")
            else:
                log(f"{f.name} -> {names[f]} ({len(res.faces)} face{'s' if len(res.faces) != 1 else ''}, {w}x{h})")
    summary.seconds = time.perf_counter() - t0
    return summary


def _resize_alpha(alpha: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(alpha).resize((size, size), Image.Resampling.BICUBIC))


__all__ = [
    "StillImage",
    "StillResult",
    "StillsSummary",
    "build_still_components",
    "detect_faces",
    "discover_images",
    "is_gray",
    "load_image",
    "output_names",
    "resize_to_model",
    "restore_aligned",
    "restore_image",
    "restore_image_result",
    "restore_stills",
    "save_png",
    "upscale_alpha",
]
