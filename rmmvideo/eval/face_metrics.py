"""Identity metrics with dlib (as in the paper: "a pretrained face recognition model based on
dlib"):

- FED (face-embedding distance): Euclidean distance between dlib's 128-d face descriptors
  (``dlib_face_recognition_resnet_model_v1``) of the restored face and of the ground truth.
  dlib's own same-person threshold is 0.6; the paper reports 0.19-0.28 on CelebA x4.
- LLE (landmark localisation error): mean Euclidean distance in pixels between the 68 dlib
  landmarks of the restored face and of the ground truth, measured at the size of the images
  given (the evaluator gives model-size crops, so "pixels at S x S": state S with the number).

Both images use the ground truth's face box (dlib HOG detector on the ground truth, upsampled
once; the whole image when it finds no face, as for tight crops), so LLE compares landmark
fits started from the same box and FED descriptors come from each image's own landmarks.
The 68-point model's training data (iBUG 300-W) forbids commercial use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_uint8(x: Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> contiguous uint8 ``(H, W, 3)`` (what dlib reads)."""
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {tuple(x.shape)}")
    a = (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5)
    return np.ascontiguousarray(a.astype(np.uint8))


@dataclass
class FaceReference:
    """What the metrics need of a ground-truth face, computed once and reused for every method.
    ``box``: (left, top, right, bottom); ``detected``: False when the whole image was used."""

    box: tuple[int, int, int, int]
    detected: bool
    landmarks: np.ndarray  # (68, 2)
    descriptor: np.ndarray  # (128,)


def _rect(box: tuple[int, int, int, int]) -> Any:
    import dlib

    return dlib.rectangle(*box)


def _shape_and_descriptor(img: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    from rmmvideo.video.dlib_models import face_recognition_model, shape_predictor, shape_to_numpy

    shape = shape_predictor(68)(img, _rect(box))
    desc = np.asarray(face_recognition_model().compute_face_descriptor(img, shape), dtype=np.float64)
    return shape_to_numpy(shape), desc


def face_descriptor(img: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """dlib's 128-d descriptor of the face in uint8 ``img`` (H, W, 3) with these (68, 2) landmarks."""
    import dlib

    from rmmvideo.video.dlib_models import face_recognition_model

    pts = np.rint(np.asarray(landmarks68, np.float64)).astype(int)
    rect = dlib.rectangle(int(pts[:, 0].min()), int(pts[:, 1].min()), int(pts[:, 0].max()), int(pts[:, 1].max()))
    shape = dlib.full_object_detection(rect, dlib.points([dlib.point(int(x), int(y)) for x, y in pts]))
    return np.asarray(face_recognition_model().compute_face_descriptor(np.ascontiguousarray(img), shape),
                      dtype=np.float64)


def face_reference(gt: np.ndarray) -> FaceReference:
    """Box, 68 landmarks and descriptor of a ground-truth face (uint8 ``(H, W, 3)``)."""
    from rmmvideo.video.dlib_models import hog_detector

    rects = hog_detector()(gt, 1)
    if len(rects):
        r = max(rects, key=lambda r: r.width() * r.height())
        box, detected = (r.left(), r.top(), r.right(), r.bottom()), True
    else:
        h, w = gt.shape[:2]
        box, detected = (0, 0, w - 1, h - 1), False
    lm, desc = _shape_and_descriptor(gt, box)
    return FaceReference(box, detected, lm, desc)


def fed_lle(img: np.ndarray, ref: FaceReference) -> tuple[float, float]:
    """(FED, LLE in px) of a restored face (uint8 ``(H, W, 3)``, same size as the reference's
    ground truth) against ``ref``."""
    lm, desc = _shape_and_descriptor(img, ref.box)
    fed = float(np.linalg.norm(desc - ref.descriptor))
    lle = float(np.linalg.norm(lm - ref.landmarks, axis=1).mean())
    return fed, lle


def fed(x: Tensor, gt: Tensor) -> float:
    """FED between two ``(3, H, W)`` images in [0, 1] (``gt`` gives the face box)."""
    return fed_lle(to_uint8(x), face_reference(to_uint8(gt)))[0]


def lle(x: Tensor, gt: Tensor) -> float:
    """LLE in pixels between two ``(3, H, W)`` images in [0, 1] of the same size."""
    return fed_lle(to_uint8(x), face_reference(to_uint8(gt)))[1]


def batch_fed_lle(x: Tensor, refs: list[FaceReference]) -> tuple[Tensor, Tensor]:
    """FED and LLE ``(B,)`` float64 for a batch ``(B, 3, H, W)`` against per-image references."""
    if x.dim() != 4 or x.shape[0] != len(refs):
        raise ValueError(f"expected (B, 3, H, W) with B = {len(refs)}, got {tuple(x.shape)}")
    vals = [fed_lle(to_uint8(x[i]), refs[i]) for i in range(len(refs))]
    t = torch.tensor(vals, dtype=torch.float64).reshape(len(refs), 2)
    return t[:, 0], t[:, 1]
