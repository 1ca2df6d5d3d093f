"""Synthetic face clips for the face tests: the astronaut's face (skimage.data.astronaut()) and
its mirror image moving, scaling, entering, leaving and crossing over a grey canvas, with
ground-truth 68-point landmarks. Imported explicitly by the tests that use it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

# 68-point label permutation for a mirrored face (image-left and image-right parts swap).
MIRROR_68 = np.array(
    list(range(16, -1, -1))            # jaw
    + list(range(26, 21, -1))          # brows 17-21 <- 26-22
    + list(range(21, 16, -1))          # brows 22-26 <- 21-17
    + [27, 28, 29, 30]                 # nose bridge
    + [35, 34, 33, 32, 31]             # nose bottom
    + [45, 44, 43, 42, 47, 46]         # eye 36-41 <- mirrored 42-47
    + [39, 38, 37, 36, 41, 40]         # eye 42-47 <- mirrored 36-41
    + [54, 53, 52, 51, 50, 49, 48]     # outer lip top
    + [59, 58, 57, 56, 55]             # outer lip bottom
    + [64, 63, 62, 61, 60]             # inner lip top
    + [67, 66, 65]                     # inner lip bottom
)

PATCH_BOX = (120, 30, 330, 240)  # x0, y0, x1, y1 of the face patch in the astronaut image


@lru_cache(maxsize=1)
def face_patch() -> tuple[np.ndarray, np.ndarray]:
    """(patch (210, 210, 3) uint8, landmarks (68, 2) in patch pixels, found by dlib)."""
    from skimage import data as skdata

    from rmmvideo.video.detect import DlibDetector

    img = skdata.astronaut()
    x0, y0, x1, y1 = PATCH_BOX
    patch = np.ascontiguousarray(img[y0:y1, x0:x1])
    dets = DlibDetector(max_side=None).detect([img])[0]
    assert len(dets) == 1, "dlib must find the astronaut's face"
    lm = dets[0].landmarks - np.array([x0, y0], dtype=np.float64)
    return patch, lm


@dataclass
class FaceState:
    """Where a face is in one frame: top-left corner, scale, mirrored or not."""

    x: float
    y: float
    scale: float
    mirrored: bool


def render(states: list[FaceState | None], size: tuple[int, int] = (360, 720)) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Draw faces (later ones on top) on a grey canvas. Returns the (H, W, 3) uint8 frame and per
    face its ground-truth (68, 2) landmarks (None for absent faces)."""
    patch, lm0 = face_patch()
    h, w = size
    canvas = np.full((h, w, 3), 118, np.uint8)
    gts: list[np.ndarray | None] = []
    for st in states:
        if st is None:
            gts.append(None)
            continue
        p, lm = patch, lm0.copy()
        if st.mirrored:
            p = np.ascontiguousarray(p[:, ::-1])
            lm[:, 0] = patch.shape[1] - 1 - lm[:, 0]
            lm = lm[MIRROR_68]
        side = max(8, int(round(patch.shape[0] * st.scale)))
        s = side / patch.shape[0]
        p = np.asarray(Image.fromarray(p).resize((side, side), Image.Resampling.BILINEAR))
        x0, y0 = int(round(st.x)), int(round(st.y))
        # Paste with clipping at the canvas edges.
        cx0, cy0 = max(0, x0), max(0, y0)
        cx1, cy1 = min(w, x0 + side), min(h, y0 + side)
        if cx1 > cx0 and cy1 > cy0:
            canvas[cy0:cy1, cx0:cx1] = p[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        gts.append((lm + 0.5) * s - 0.5 + np.array([x0, y0], dtype=np.float64))
    return canvas, gts


def box_of(lm: np.ndarray) -> np.ndarray:
    """A detector-like box around landmarks (x0, y0, x1, y1)."""
    lo, hi = lm.min(0), lm.max(0)
    return np.array([lo[0], lo[1], hi[0], hi[1]], dtype=np.float64)
