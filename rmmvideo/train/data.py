"""Face datasets for training and evaluation, and the alignment template of a crop style.

A checkpoint's template (``ModelConfig.template``) must match how its training faces were
cropped: the video pipeline aligns faces to it before restoring. UTKFace crops (200x200, tight:
eye centres near (57, 57) and (136, 59)) are much tighter than FFHQ's; ``estimate_template``
measures the template of a folder of crops with dlib's 68-point landmarks.

``FaceFolderDataset`` yields ``dict(lq=(3, S, S), hq=(3, S, S), name=str)``, both in [0, 1]:
``hq`` is the face resized to ``S`` (aligned first when ``align=True``), ``lq`` its degradation
(``rmmvideo.train.degrade``, eq. 16) resized back to ``S`` (the model input). With
``degrade_at_source`` the degradation starts from the image at its own resolution (200 px for
UTKFace) instead of from ``hq``: its scale is then relative to the source, so scales below
``source / S`` give LQ faces *larger* than the crop, as the video pipeline sees big faces
(crop pixels per input pixel below 1), with their codec artefacts shrunk into the crop.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rmmvideo.errors import UserError
from rmmvideo.train.degrade import (
    AnyDegradation,
    DegradationConfig,
    apply_params,
    resize_to,
    sample_params,
    to_grayscale,
)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
Split = Literal["train", "val", "all"]


# ----------------------------------------------------------------------------- files and split


def list_images(root: str | Path) -> list[Path]:
    """All images under ``root`` (recursive), sorted by relative path."""
    r = Path(root)
    if not r.is_dir():
        raise UserError(f"not a folder: {r}")
    return sorted(p for p in r.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def split_of(name: str, val_fraction: float) -> Literal["train", "val"]:
    """Deterministic split of a file name: the first 8 bytes of its SHA-1 as a number in [0, 1)
    against ``val_fraction``. Independent of any seed and of the other files, so the validation
    set is stable across runs and folders."""
    h = int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2.0**64
    return "val" if h < val_fraction else "train"


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)``."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from e


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` -> float32 ``(3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(255.0)


def center_square_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop then bicubic resize to ``size``: uint8 ``(size, size, 3)``."""
    h, w = img.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(img[y0 : y0 + s, x0 : x0 + s])
    if s != size:
        im = im.resize((size, size), Image.BICUBIC)
    return np.asarray(im)


# ----------------------------------------------------------------------------- landmarks, template


def landmarks68(img: np.ndarray, tight: bool = False) -> np.ndarray | None:
    """68 dlib landmarks ``(68, 2)`` (x, y in pixels) of the largest face found by dlib's HOG
    detector (upsampled once). With ``tight=True`` the whole image is used as the face box when
    the detector finds nothing (tight crops); otherwise None is returned."""
    import dlib

    from rmmvideo.video.dlib_models import hog_detector, shape_predictor, shape_to_numpy

    rects = hog_detector()(img, 1)
    if len(rects):
        rect = max(rects, key=lambda r: r.width() * r.height())
    elif tight:
        h, w = img.shape[:2]
        rect = dlib.rectangle(0, 0, w - 1, h - 1)
    else:
        return None
    return shape_to_numpy(shape_predictor(68)(img, rect))


def landmarks5(img: np.ndarray, tight: bool = False) -> np.ndarray | None:
    """5 points ``(5, 2)`` (left eye, right eye, nose tip, mouth corners) or None."""
    from rmmvideo.video.dlib_models import five_from_68

    pts = landmarks68(img, tight=tight)
    return None if pts is None else five_from_68(pts)


def estimate_template(
    image_paths: Sequence[str | Path], n: int = 300, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Alignment template of a set of face crops of the same size.

    Takes ``n`` images (a seeded random choice), finds 5 dlib points on each (HOG face box,
    or the full image for tight crops), normalises them by the image width and height and
    returns the per-coordinate 10%-trimmed mean ``(5, 2)`` in [0, 1] (robust to the odd failed
    landmark fit) and the number of images used.
    """
    paths = list(image_paths)
    if not paths:
        raise UserError("estimate_template: no images")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    pts = []
    for i in sorted(pick):
        img = load_rgb(paths[i])
        p = landmarks5(img, tight=True)
        if p is not None:
            h, w = img.shape[:2]
            pts.append(p / np.array([w, h], dtype=np.float64))
    if not pts:
        raise UserError("estimate_template: no face landmarks found")
    from scipy.stats import trim_mean

    return np.asarray(trim_mean(np.stack(pts), 0.1, axis=0)), len(pts)


def align_to_template(
    img: np.ndarray,
    size: int,
    template: Sequence[Sequence[float]] | np.ndarray,
    points5: np.ndarray | None = None,
) -> np.ndarray | None:
    """Align a face photo to ``template`` (5 normalised points) at ``size``: dlib 5 points of
    the largest face (or ``points5`` when given), then the video pipeline's own alignment
    (``rmmvideo.video.align``: the same similarity transform, pixel-centre convention and
    antialiased warp), so training and inference crop faces identically.
    Returns uint8 ``(size, size, 3)``, or None when no face is found."""
    import torch

    from rmmvideo.video.align import align_matrices, warp_to_crops
    from rmmvideo.video.upscale import images_to_tensor, tensor_to_images

    pts = landmarks5(img) if points5 is None else np.asarray(points5, dtype=np.float64)
    if pts is None:
        return None
    m = align_matrices(torch.as_tensor(pts, dtype=torch.float64)[None], template, size)
    crop = warp_to_crops(images_to_tensor(img), torch.zeros(1, dtype=torch.long), m, size)
    return tensor_to_images(crop.clamp(0, 1))[0]


# ----------------------------------------------------------------------------- dataset


class FaceFolderDataset(Dataset):
    """Folder of face images -> ``dict(lq, hq, name)`` pairs for RMM training or evaluation.

    Args:
        root: folder of images (searched recursively).
        size: model crop side S.
        split: "train", "val" (``split_of`` on the relative path) or "all".
        val_fraction: share of files in "val".
        seed: base seed of the degradation.
        degradation: ``DegradationConfig`` or ``DegradationMixture`` (None: the paper's default
            ranges).
        grayscale_prob: probability that an item is grayscale in BOTH hq and lq (old-film
            training without learning to colourise). ``degradation.grayscale_prob`` instead greys
            only the lq.
        align: detect and align each face to ``template`` (for non-aligned photos). Otherwise
            images are taken as already aligned (centre square crop, resize).
        degrade_at_source: degrade the image at its own resolution, then resize the LQ to ``S``
            (module doc); ``hq`` is unchanged.
        template: 5 normalised points (needed when ``align``).
        fixed_degradation: draw the degradation from ``(seed, name)`` only, the same each epoch
            (default: True for "val" and "all", False for "train", where it also depends on the
            epoch set by ``set_epoch``; with a DataLoader, call it before creating the epoch's
            iterator and do not use ``persistent_workers``, whose copies keep the old epoch).
        limit: keep only the first ``limit`` files of the split.

    Items: ``lq`` (3, S, S) float32 in [0, 1] (degraded, then bicubic back to S), ``hq``
    (3, S, S), ``name`` (relative path).
    """

    def __init__(
        self,
        root: str | Path,
        size: int,
        split: Split = "train",
        val_fraction: float = 0.05,
        seed: int = 0,
        degradation: AnyDegradation | None = None,
        grayscale_prob: float = 0.0,
        align: bool = False,
        template: Sequence[Sequence[float]] | None = None,
        fixed_degradation: bool | None = None,
        limit: int | None = None,
        degrade_at_source: bool = False,
    ) -> None:
        if split not in ("train", "val", "all"):
            raise UserError(f"split must be train, val or all, got {split!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if align and template is None:
            raise UserError("align=True needs a template")
        self.root = Path(root)
        self.size = int(size)
        self.split = split
        self.seed = int(seed)
        self.degradation = degradation or DegradationConfig()
        self.grayscale_prob = float(grayscale_prob)
        self.align = align
        self.degrade_at_source = bool(degrade_at_source)
        self.template = None if template is None else np.asarray(template, dtype=np.float64)
        self.fixed = (split != "train") if fixed_degradation is None else fixed_degradation
        self.epoch = 0
        files = list_images(self.root)
        if not files:
            raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) under {self.root}")
        rel = [p.relative_to(self.root).as_posix() for p in files]
        keep = [i for i, r in enumerate(rel) if split == "all" or split_of(r, val_fraction) == split]
        if limit is not None:
            keep = keep[: max(0, int(limit))]
        if not keep:
            raise UserError(
                f"split {split!r} of {self.root} is empty ({len(files)} images, "
                f"val_fraction={val_fraction})"
            )
        self.paths = [files[i] for i in keep]
        self.names = [rel[i] for i in keep]

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Change the degradation draw of a non-fixed dataset (call before each epoch)."""
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> np.random.Generator:
        """The item's degradation generator: seeded by (seed, [epoch,] crc32(name))."""
        key = zlib.crc32(self.names[index].encode("utf-8"))
        parts = [self.seed, key] if self.fixed else [self.seed, self.epoch, key]
        return np.random.default_rng(parts)

    def load_hq(self, index: int) -> torch.Tensor:
        """The HQ face ``(3, S, S)`` in [0, 1] (aligned when ``align``)."""
        return self._faces(index, [self.size])[0]

    def load_source(self, index: int) -> torch.Tensor:
        """The face at the image's own resolution ``(3, N, N)``, N its shorter side (aligned when
        ``align``): what ``degrade_at_source`` degrades."""
        return self._faces(index, [None])[0]

    def _faces(self, index: int, sizes: Sequence[int | None]) -> list[torch.Tensor]:
        """The face of one image at each of ``sizes`` (None: its own resolution), from one read
        and, when ``align``, one landmark detection."""
        img = load_rgb(self.paths[index])
        pts = None
        if self.align:
            assert self.template is not None
            pts = landmarks5(img)
        out = []
        for k in sizes:
            k = min(img.shape[:2]) if k is None else k
            face = None if pts is None else align_to_template(img, k, self.template, points5=pts)
            # already aligned, or no face found: centre crop
            out.append(to_tensor(face if face is not None else center_square_resize(img, k)))
        return out

    def __getitem__(self, index: int) -> dict[str, object]:
        rng = self.rng_for(index)
        gray = bool(rng.random() < self.grayscale_prob)
        hq, *rest = self._faces(index, [self.size, None] if self.degrade_at_source else [self.size])
        src = rest[0] if rest else None
        params = sample_params(rng, self.degradation)
        if gray:
            hq = to_grayscale(hq)
            src = None if src is None else to_grayscale(src)
            params = replace(params, grayscale=True)
        lq = resize_to(apply_params(hq if src is None else src, params), self.size)
        return {"lq": lq, "hq": hq, "name": self.names[index]}


def template_from_paths(paths: Iterable[str | Path], n: int = 300, seed: int = 0) -> list[list[float]]:
    """``estimate_template`` rounded to 6 decimals as a YAML-ready list of 5 [x, y]."""
    t, _ = estimate_template(list(paths), n=n, seed=seed)
    return [[round(float(x), 6), round(float(y), 6)] for x, y in t]
