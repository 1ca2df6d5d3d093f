"""Face detection backends (rmmvideo.video.detect): dlib on real clips, FAN's code path with
random weights (no download, no real FAN weights needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.video.detect import (
    FAN_FILE,
    S3FD_FILE,
    Detection,
    DlibDetector,
    FaceDetector,
    FanDetector,
    MtcnnDetector,
    fan_weights_present,
    make_detector,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
VIDEOS = DATA / "videos"


def _frames(name: str, every: int, count: int) -> list[np.ndarray]:
    av = pytest.importorskip("av")
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared/data absent)")
    out = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for i, f in enumerate(c.decode(stream)):
            if i % every == 0:
                out.append(f.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return out


@pytest.mark.parametrize("name", ["landscape_1280x720_30fps_audio.mp4", "portrait_720x1280_30fps_noaudio.mp4",
                                  "talking_512sq_30fps_audio.mp4"])
def test_dlib_finds_the_face_on_real_frames(name: str):
    frames = _frames(name, every=25, count=4)
    det = DlibDetector(max_side=640)
    assert isinstance(det, FaceDetector) and det.name == "dlib"
    results = det.detect(frames)
    assert len(results) == len(frames)
    for im, dets in zip(frames, results):
        assert len(dets) == 1, f"expected one face in {name}, got {len(dets)}"
        d = dets[0]
        assert isinstance(d, Detection) and d.landmarks.shape == (68, 2) and d.box.shape == (4,)
        x0, y0, x1, y1 = d.box
        side = max(x1 - x0, y1 - y0)
        assert side > 0.08 * max(im.shape[:2])
        # 68 points inside the box; dlib's HOG box is tight and often cuts the chin: allow a
        # 25 % margin for the jaw line, none for the inner points below.
        m = 0.25 * side
        lm = d.landmarks
        assert np.all((lm[:, 0] > x0 - m) & (lm[:, 0] < x1 + m) & (lm[:, 1] > y0 - m) & (lm[:, 1] < y1 + m))
        # Inner points (eyes, nose, mouth) strictly inside the box.
        inner = lm[17:]
        assert np.all((inner[:, 0] > x0) & (inner[:, 0] < x1) & (inner[:, 1] > y0) & (inner[:, 1] < y1))
        # Anatomy: image-left eye is left of the image-right eye, mouth below the eyes.
        assert lm[36:42, 0].mean() < lm[42:48, 0].mean()
        assert lm[48:68, 1].mean() > lm[36:48, 1].mean()


def test_dlib_downscale_agrees_with_full_resolution():
    frames = _frames("landscape_1280x720_30fps_audio.mp4", every=30, count=2)
    small = DlibDetector(max_side=640).detect(frames)
    full = DlibDetector(max_side=None).detect(frames)
    for a, b in zip(small, full):
        assert len(a) == len(b) == 1
        side = a[0].box[2] - a[0].box[0]
        # Same face; landmarks come from the full frame in both cases, so they agree closely.
        assert np.abs(a[0].box - b[0].box).max() < 0.15 * side
        assert np.median(np.linalg.norm(a[0].landmarks - b[0].landmarks, axis=1)) < 0.05 * side


def test_dlib_finds_the_astronaut():
    from skimage import data as skdata

    img = skdata.astronaut()
    dets = DlibDetector().detect([img, np.zeros((100, 120, 3), np.uint8)])
    assert len(dets[0]) == 1 and dets[1] == []
    x0, y0, x1, y1 = dets[0][0].box
    assert 150 < (x0 + x1) / 2 < 300 and 60 < (y0 + y1) / 2 < 200


def test_dlib_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8"):
        DlibDetector().detect([np.zeros((10, 10, 3), np.float32)])


# ---------------------------------------------------------------------------------- FAN path


@pytest.fixture(scope="module")
def random_fan_dir(tmp_path_factory) -> Path:
    """Random-weight S3FD and 2DFAN4 saved under the real file names (exercises loading)."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    d = tmp_path_factory.mktemp("fa_models")
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), d / S3FD_FILE)
    torch.save(FAN(4).state_dict(), d / FAN_FILE)
    return d


@pytest.fixture(scope="module")
def fan_det(random_fan_dir: Path) -> FanDetector:
    return FanDetector(device="cpu", models_dir=random_fan_dir, max_side=None)


def test_make_detector_choices(random_fan_dir: Path, tmp_path: Path):
    det, why = make_detector("auto", models_dir=random_fan_dir)
    assert isinstance(det, FanDetector) and det.name == "fan" and "FAN" in why
    # The weights loaded are the files' weights.
    ref = torch.load(random_fan_dir / FAN_FILE, weights_only=True)
    assert all(torch.equal(v, ref[k]) for k, v in det.fan.state_dict().items())
    det, why = make_detector("auto", models_dir=tmp_path)
    assert isinstance(det, MtcnnDetector) and det.name == "mtcnn" and "MTCNN" in why
    det, why = make_detector("dlib")
    assert isinstance(det, DlibDetector) and "dlib" in why
    with pytest.raises(UserError, match="missing"):
        make_detector("fan", models_dir=tmp_path)
    with pytest.raises(UserError, match="unknown face detector"):
        make_detector("retinaface")  # type: ignore[arg-type]
    (tmp_path / S3FD_FILE).write_bytes(b"not a checkpoint")
    (tmp_path / FAN_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot load"):
        FanDetector(models_dir=tmp_path)


def test_fan_weights_found_in_torch_hub_cache(random_fan_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert fan_weights_present() is None
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / S3FD_FILE).symlink_to(random_fan_dir / S3FD_FILE)
    assert fan_weights_present() is None  # both files are needed
    (ckpt / FAN_FILE).symlink_to(random_fan_dir / FAN_FILE)
    assert fan_weights_present() == ckpt


@pytest.mark.slow
def test_fan_batched_landmarks_match_face_alignment(fan_det: FanDetector, monkeypatch):
    """Our batched FAN path equals face-alignment's own get_landmarks_from_image (which truncates
    points to integers) for the same network and box."""
    import types

    import face_alignment
    import face_alignment.utils as fa_utils

    # Run face-alignment's numba helpers as plain Python (same code, no 15 s JIT compile).
    monkeypatch.setattr(fa_utils, "transform_np", fa_utils.transform_np.py_func)
    monkeypatch.setattr(fa_utils, "_get_preds_fromhm", fa_utils._get_preds_fromhm.py_func)
    # face-alignment's FaceAlignment with our loaded network (skips loading it a second time).
    fa = face_alignment.FaceAlignment.__new__(face_alignment.FaceAlignment)
    fa.device, fa.dtype, fa.flip_input, fa.max_batch_size = "cpu", torch.float32, False, 1
    fa.landmarks_type = face_alignment.LandmarksType.TWO_D
    fa.face_alignment_net = fan_det.fan
    fa.face_detector = types.SimpleNamespace(reference_scale=fa_utils.REFERENCE_SCALE)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (180, 240, 3), dtype=np.uint8), np.zeros((50, 60, 3), np.uint8)]
    boxes = [np.array([[40.0, 30.0, 140.0, 150.0, 0.9]]), np.zeros((0, 5))]
    got = fan_det.landmarks(images, boxes)
    assert [g.shape for g in got] == [(1, 68, 2), (0, 68, 2)]
    ref = fa.get_landmarks_from_image(images[0], detected_faces=[boxes[0][0, :4].astype(np.float64)])[0]
    # face-alignment truncates points to int32 (towards zero); ours are not rounded. A few points
    # may move by the quarter-heatmap-pixel refinement step: float noise between batched and
    # single convolutions decides the sign of a near-zero neighbour difference (random weights).
    h = 200.0 * (100 + 120) / 195.0
    step = 0.25 * h / 64
    assert np.mean(np.trunc(got[0][0]) == ref) > 0.9
    assert np.all(np.abs(got[0][0] - ref) < 1.0 + step + 1e-6)


@pytest.mark.slow
def test_fan_batched_boxes_match_face_alignment(fan_det: FanDetector):
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    # face-alignment's detector object around the same network (its decoding, NMS and filter).
    ref_det = SFDDetector.__new__(SFDDetector)
    ref_det.device, ref_det.verbose, ref_det.filter_threshold = "cpu", False, 0.5
    ref_det.face_detector = fan_det.s3fd
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    got = fan_det.detect_boxes(images)
    ref = ref_det.detect_from_batch(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float())
    for g, r in zip(got, ref):
        r = np.array(r).reshape(-1, 5)
        assert len(g) == len(r) > 0
        key = lambda a: a[np.lexsort(a[:, :4].T)]
        np.testing.assert_allclose(key(g), key(r), rtol=1e-4, atol=1e-3)


@pytest.mark.slow
def test_fan_detect_end_to_end_with_downscale(fan_det: FanDetector):
    import copy

    det = copy.copy(fan_det)
    det.max_side, det.threshold, det.fan_batch = 128, 0.9, 4
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (200, 300, 3), dtype=np.uint8) for _ in range(2)]
    boxes = det.detect_boxes(images)
    res = det.detect(images)
    assert len(res) == 2
    for im, bx, dets in zip(images, boxes, res):
        assert len(dets) == len(bx)
        for d, b in zip(dets, bx):  # random weights: any boxes, but well-formed, frame coordinates
            assert d.landmarks.shape == (68, 2) and np.isfinite(d.landmarks).all()
            assert d.score > 0.9
            np.testing.assert_allclose(d.box, b[:4])


def test_dlib_tracking_and_alignment_on_a_real_clip():
    """dlib + tracker on 30 real frames: one id, smoothed points steadier than raw detections,
    and crops aligned on the tracked points put the eyes on the template."""
    from rmmvideo.config import FFHQ_TEMPLATE
    from rmmvideo.video.align import align_matrices, five_points, template_points
    from rmmvideo.video.track import FaceTracker

    frames = _frames("talking_512sq_30fps_audio.mp4", every=1, count=30)
    dlib_det = DlibDetector()
    seen: list[list[Detection]] = []

    class Recording:  # the real detector, its raw outputs kept for comparison
        name = "dlib"

        def detect(self, images):
            res = dlib_det.detect(images)
            seen.extend(res)
            return res

    tracker = FaceTracker(Recording(), detect_every=1, min_hits=2, max_gap=1, smooth_sigma=2.0)
    out = tracker.push(list(enumerate(frames))) + tracker.flush()
    raw = np.stack([five_points(d[0].landmarks) for d in seen])
    assert [f.index for f in out] == list(range(30))
    assert all(len(f.faces) == 1 and f.faces[0].track_id == 0 for f in out)
    smooth = np.stack([f.faces[0].points5 for f in out])

    def jitter(p):  # mean absolute second difference over time (acceleration noise), pixels
        return float(np.abs(np.diff(p, 2, axis=0)).mean())

    assert jitter(smooth) < 0.5 * jitter(raw)
    m = align_matrices(torch.from_numpy(smooth), FFHQ_TEMPLATE, 256)
    mapped = torch.einsum("nij,npj->npi", m[:, :, :2], torch.from_numpy(smooth)) + m[:, None, :, 2]
    err = (mapped - template_points(FFHQ_TEMPLATE, 256)).norm(dim=-1)
    assert float(err[:, :2].max()) < 12.0  # eyes within a few pixels of the template at 256


@pytest.mark.slow
def test_dlib_cnn_detector_finds_the_astronaut():
    from skimage import data as skdata

    img = np.ascontiguousarray(skdata.astronaut()[20:260, 110:350])  # around the face: fast on CPU
    dets = DlibDetector(max_side=None, use_cnn=True).detect([img, np.zeros((64, 64, 3), np.uint8)])
    assert [len(d) for d in dets] == [1, 0]
    hog = DlibDetector(max_side=None).detect([img])[0][0]
    assert box_iou_1(dets[0][0].box, hog.box) > 0.4
    assert np.median(np.linalg.norm(dets[0][0].landmarks - hog.landmarks, axis=1)) < 5.0


def box_iou_1(a: np.ndarray, b: np.ndarray) -> float:
    from rmmvideo.video.track import box_iou

    return float(box_iou(a, b)[0, 0])
