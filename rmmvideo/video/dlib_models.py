"""Locate and load dlib's offline face models (from the ``face-recognition-models`` package).

The package's ``__init__`` imports ``pkg_resources`` (gone with setuptools >= 81), so the
``.dat`` files are located without importing it (:mod:`rmmvideo.package_data`).

Licences: the 68-point shape predictor was trained on iBUG 300-W, whose terms forbid commercial
use; the 5-point predictor and the 128-d descriptor model are CC0 / public domain (dlib).

Everything is lazy: nothing is loaded at import time; loaders are cached per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rmmvideo.errors import UserError
from rmmvideo.package_data import installed_package_path

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
FACE_REC = "dlib_face_recognition_resnet_model_v1.dat"
CNN_DETECTOR = "mmod_human_face_detector.dat"


def model_dir() -> Path:
    """Folder holding the dlib ``.dat`` files; UserError when the package is missing."""
    d = installed_package_path("face_recognition_models", "models")
    if d is not None and d.is_dir():
        return d
    raise UserError(
        "dlib face models not found: pip install face-recognition-models (offline copy is fine)"
    )


def model_path(name: str) -> Path:
    """Path of one model file (e.g. ``SHAPE_68``); UserError when it is absent."""
    p = model_dir() / name
    if not p.is_file():
        raise UserError(f"dlib model file missing: {p}")
    return p


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a dependency
        raise UserError("dlib is not installed: pip install dlib-bin") from e
    return dlib


@lru_cache(maxsize=1)
def hog_detector() -> Any:
    """dlib's frontal HOG face detector (cached)."""
    return _dlib().get_frontal_face_detector()


@lru_cache(maxsize=2)
def shape_predictor(points: int = 68) -> Any:
    """dlib shape predictor with 68 or 5 points (cached)."""
    if points not in (5, 68):
        raise ValueError(f"points must be 5 or 68, got {points}")
    return _dlib().shape_predictor(str(model_path(SHAPE_68 if points == 68 else SHAPE_5)))


@lru_cache(maxsize=1)
def face_recognition_model() -> Any:
    """dlib's 128-d face descriptor network (cached)."""
    return _dlib().face_recognition_model_v1(str(model_path(FACE_REC)))


def shape_to_numpy(shape: Any) -> np.ndarray:
    """dlib ``full_object_detection`` -> ``(P, 2)`` float64 array of (x, y)."""
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)],
                    dtype=np.float64)


def five_from_68(pts: np.ndarray) -> np.ndarray:
    """5 points from the 68-point layout: left eye centre (mean of 36-41), right eye centre
    (42-47), nose tip (30), left and right mouth corners (48, 54). "Left" is the image's left.
    ``(68, 2) -> (5, 2)``."""
    if pts.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {pts.shape}")
    return np.stack([pts[36:42].mean(0), pts[42:48].mean(0), pts[30], pts[48], pts[54]])
