"""`rmmvideo faces` on still images, with a randomly initialised rmm-small (empty memory).

A folder holds a UTKFace crop, scikit-image's astronaut saved as PNG, a face-less pattern, a
text file named x.jpg (broken image) and a notes.txt (not an image): outputs keep the stems,
photos are upscaled by --scale with only the face region changed, the face-less one is the
plain upscale, the broken file is reported and makes the exit code non-zero, --aligned writes
model-size crops.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.config import ModelConfig
from rmmvideo.models.rmm import RMM
from rmmvideo.models.weights import save_pretrained
from rmmvideo.video.upscale import upscale_images

REPO = Path(__file__).resolve().parents[2]
UTK = REPO.parent / "shared" / "data" / "faces" / "utkface"
UTK_FILE = "25_0_3_20170119152752375.jpg"
pytestmark = pytest.mark.skipif(not (UTK / UTK_FILE).is_file(), reason=f"UTKFace crops not found at {UTK}")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = RMM(ModelConfig.from_yaml(REPO / "configs" / "models" / "rmm-small.yaml"))
    return save_pretrained(model, tmp_path_factory.mktemp("w") / "w.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("in")
    shutil.copy(UTK / UTK_FILE, d / UTK_FILE)
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    y, x = np.mgrid[0:96, 0:128]
    pattern = np.stack([x * 2, y * 2, (x + y)], -1).clip(0, 255).astype(np.uint8)
    Image.fromarray(pattern).save(d / "pattern.png")
    (d / "x.jpg").write_text("this is not a JPEG\n")
    (d / "notes.txt").write_text("not an image either\n")
    return d


def _faces(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmmvideo", "faces", *args], check=False, capture_output=True,
                          text=True, cwd=REPO, timeout=300)


def _load(p: Path) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(p).convert("RGB"))


def test_faces_folder_photos(weights: Path, folder: Path, tmp_path: Path) -> None:
    from skimage import data

    from rmmvideo.video.align import align_matrices
    from rmmvideo.video.detect import DlibDetector
    from rmmvideo.video.stills import detect_faces

    out = tmp_path / "out"
    r = _faces(str(folder), "-o", str(out), "--weights", str(weights), "--detector", "dlib",
               "--scale", "2", "--threads", "1", "--strength", "1")  # 1: the random model's detail is pasted
    assert r.returncode == 1, r.stderr  # x.jpg is broken
    assert "x.jpg" in r.stderr and "cannot read image" in r.stderr
    assert "notes.txt: not an image, skipped" in r.stderr
    assert "pattern.png: no face found" in r.stderr
    assert "3 of 4 images written" in r.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["astronaut.png", "pattern.png", Path(UTK_FILE).stem + ".png"])

    astro = data.astronaut()
    got = _load(out / "astronaut.png")
    assert got.shape == (1024, 1024, 3)
    plain = upscale_images(astro, 2.0)
    changed = (got != plain).any(-1)
    # the face's aligned crop square, on the upscaled canvas: every change lies inside it
    faces = detect_faces(astro, DlibDetector())
    assert len(faces) == 1
    cfg = ModelConfig.from_yaml(REPO / "configs" / "models" / "rmm-small.yaml")
    m = align_matrices(torch.as_tensor(faces[0].points5[None]), cfg.template, cfg.size)[0].numpy()
    a_inv = np.linalg.inv(m[:, :2])
    s = cfg.size
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5]])
    frame_pts = (corners - m[:, 2]) @ a_inv.T * 2 + 0.5  # crop -> frame -> canvas (x2)
    x0, y0 = frame_pts.min(0) - 3
    x1, y1 = frame_pts.max(0) + 3
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 2000  # the face was restored
    assert xs.min() >= x0 and xs.max() <= x1 and ys.min() >= y0 and ys.max() <= y1
    assert changed.mean() < 0.2  # background untouched

    utk = _load(out / (Path(UTK_FILE).stem + ".png"))
    assert utk.shape == (400, 400, 3)
    assert (utk != upscale_images(_load(folder / UTK_FILE), 2.0)).any(-1).mean() > 0.05

    pattern = _load(folder / "pattern.png")
    assert np.array_equal(_load(out / "pattern.png"), upscale_images(pattern, 2.0))


def test_faces_aligned_writes_model_size_crops(weights: Path, folder: Path, tmp_path: Path) -> None:
    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.options import Components, RestoreOptions
    from rmmvideo.video.stills import restore_aligned

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(folder / UTK_FILE, src / UTK_FILE)
    shutil.copy(folder / "pattern.png", src / "crop.png")  # any size, any content: stretched to S x S
    out = tmp_path / "out"
    r = _faces(str(src), "-o", str(out), "--aligned", "--weights", str(weights), "--seed", "3",
               "--threads", "1", "--quiet", "--strength", "1")
    assert r.returncode == 0, r.stderr
    assert "2 of 2 images written" in r.stdout
    a = _load(out / (Path(UTK_FILE).stem + ".png"))
    b = _load(out / "crop.png")
    assert a.shape == b.shape == (128, 128, 3)
    # the CLI's crops are the API's (same seed -> same per-crop noise); a crop alone or in a
    # batch differs only by float rounding of the batched convolutions
    model = from_pretrained(weights)
    comps = Components(model, None, "", None, torch.device("cpu"))
    api = restore_aligned([_load(folder / UTK_FILE)], comps, RestoreOptions(weights=str(weights), seed=3,
                                                                            strength=1.0))
    d = np.abs(api[0].astype(int) - a.astype(int))
    assert d.max() <= 2 and d.mean() < 0.05
    resized = upscale_images(_load(folder / UTK_FILE), 128 / 200)
    assert np.abs(a.astype(int) - resized.astype(int)).mean() > 1  # restored, not just resized
    # strength 0, and auto with weights that carry no strength calibration: the resized input
    from rmmvideo.video.stills import resize_to_model
    from rmmvideo.video.upscale import tensor_to_images

    plain = tensor_to_images(resize_to_model([_load(folder / UTK_FILE)], 128, torch.device("cpu")))[0]
    for s in (0.0, "auto"):
        got = restore_aligned([_load(folder / UTK_FILE)], comps, RestoreOptions(weights=str(weights), strength=s))
        assert np.array_equal(got[0], plain), s


def test_faces_single_file_and_errors(weights: Path, folder: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from rmmvideo.cli.main import main

    out = tmp_path / "o"
    assert main(["faces", str(folder / "x.jpg"), "-o", str(out), "--aligned", "--weights", str(weights)]) == 1
    err = capsys.readouterr().err
    assert "x.jpg" in err and "failed" in err
    assert main(["faces", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["faces", str(folder), "-o", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
    # an output folder equal to the input folder would overwrite astronaut.png: refused up front
    assert main(["faces", str(folder), "-o", str(folder), "--weights", str(weights)]) == 2
    assert "would overwrite an input" in capsys.readouterr().err


def test_grey_photo_with_alpha_stays_grey_and_keeps_alpha(weights: Path, tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.stills import restore_stills, upscale_alpha

    grey = np.asarray(Image.fromarray(data.astronaut()).convert("L"))
    alpha = np.full(grey.shape, 255, np.uint8)
    alpha[:, :64] = 0  # a transparent band on the left
    src = tmp_path / "grey.png"
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(src)
    opts = RestoreOptions(weights=str(weights), detector="dlib", threads=1, quiet=True, scale=1.5,
                          strength=1.0)  # 1: the random model's detail is pasted (auto may say 0)
    summary = restore_stills(src, tmp_path / "out", opts)
    assert not summary.failed and summary.faces == 1 and not summary.no_face
    out = np.asarray(Image.open(tmp_path / "out" / "grey.png"))
    assert out.shape == (768, 768, 4)
    assert np.array_equal(out[..., 3], upscale_alpha(alpha, 1.5))
    rgb = out[..., :3].astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 1 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 1
    plain = upscale_alpha(grey, 1.5)  # the same bicubic kernel on one channel
    assert (rgb[..., 0] != plain).mean() > 0.01  # the face was restored


def test_discovery_names_and_loading(tmp_path: Path) -> None:
    from PIL import Image

    from rmmvideo.errors import UserError
    from rmmvideo.video.stills import discover_images, load_image, output_names

    d = tmp_path / "in"
    d.mkdir()
    rgb = (np.arange(12 * 10 * 3) % 251).astype(np.uint8).reshape(12, 10, 3)
    Image.fromarray(rgb).save(d / "a.png")
    Image.fromarray(rgb).save(d / "a.jpg")
    Image.fromarray(rgb).save(d / "noext", format="PNG")  # opens with Pillow: processed
    (d / "readme.md").write_text("# no")
    (d / ".hidden.png").write_bytes(b"")
    Image.fromarray(rgb).save(d / "cut.png")
    (d / "cut.png").write_bytes((d / "cut.png").read_bytes()[:60])  # truncated PNG
    images, skipped = discover_images(d)
    assert [p.name for p in images] == ["a.jpg", "a.png", "cut.png", "noext"]
    assert [p.name for p in skipped] == ["readme.md"]
    names = output_names(images, tmp_path / "out")
    assert {p.name: o.name for p, o in names.items()} == {
        "a.jpg": "a.jpg.png", "a.png": "a.png.png", "cut.png": "cut.png", "noext": "noext.png"}
    with pytest.raises(UserError, match="overwrite"):
        output_names(images, d)
    assert np.array_equal(load_image(d / "a.png").rgb, rgb)
    with pytest.raises(UserError, match="cannot read image"):
        load_image(d / "cut.png")
    # EXIF orientation is applied (6 = rotate 90 clockwise to display)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(d / "rot.jpg", exif=exif, quality=100)
    assert load_image(d / "rot.jpg").rgb.shape == (10, 12, 3)
    # 16-bit grey and palette images become 8-bit RGB; grey is flagged
    Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500).save(d / "deep.png")
    deep = load_image(d / "deep.png")
    assert deep.rgb.dtype == np.uint8 and deep.gray and deep.rgb.shape == (12, 10, 3)
    assert int(deep.rgb[-1, -1, 0]) == round(119 * 500 / 65535 * 255)
