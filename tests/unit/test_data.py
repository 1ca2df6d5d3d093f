"""Face datasets: split, determinism, shapes; template estimation and alignment on UTK crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rmmvideo.errors import UserError
from rmmvideo.train.data import (
    FaceFolderDataset,
    align_to_template,
    estimate_template,
    landmarks5,
    list_images,
    load_rgb,
    split_of,
)
from rmmvideo.train.degrade import DegradationConfig

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UTK = DATA / "faces" / "utkface"
needs_utk = pytest.mark.skipif(not UTK.is_dir(), reason=f"UTKFace crops not found at {UTK}")

from tests.conftest import load_pipeline


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(60):
        img = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(img).resize((48, 40), Image.BICUBIC).save(tmp_path / f"face_{i:03d}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_split_stable_and_about_the_fraction() -> None:
    names = [f"{i}_0_0_2017.jpg" for i in range(4000)]
    a = [split_of(n, 0.1) for n in names]
    assert a == [split_of(n, 0.1) for n in names]
    assert 0.08 < a.count("val") / len(a) < 0.12
    assert all(split_of(n, 0.0) == "train" for n in names[:100])


def test_dataset_split_disjoint_and_complete(folder: Path) -> None:
    tr = FaceFolderDataset(folder, 32, split="train", val_fraction=0.3)
    va = FaceFolderDataset(folder, 32, split="val", val_fraction=0.3)
    al = FaceFolderDataset(folder, 32, split="all")
    assert len(al) == 60
    assert set(tr.names).isdisjoint(va.names)
    assert set(tr.names) | set(va.names) == set(al.names)
    assert len(va) > 0 and len(tr) > len(va)


def test_items_shapes_ranges_and_determinism(folder: Path) -> None:
    va = FaceFolderDataset(folder, 32, split="val", val_fraction=0.3, seed=5)
    it = va[0]
    assert it["lq"].shape == (3, 32, 32) and it["hq"].shape == (3, 32, 32)
    assert it["lq"].dtype == torch.float32
    for k in ("lq", "hq"):
        assert float(it[k].min()) >= 0.0 and float(it[k].max()) <= 1.0
    assert isinstance(it["name"], str) and it["name"].endswith(".png")
    again = FaceFolderDataset(folder, 32, split="val", val_fraction=0.3, seed=5)[0]
    assert torch.equal(it["lq"], again["lq"])  # eval: fixed per item
    va.set_epoch(3)
    assert torch.equal(va[0]["lq"], it["lq"])
    other = FaceFolderDataset(folder, 32, split="val", val_fraction=0.3, seed=6)[0]
    assert not torch.equal(it["lq"], other["lq"])


def test_degrade_at_source_scales_relative_to_the_source_image(tmp_path: Path) -> None:
    """Source 64 px, crop 32: scale 1 keeps the source's detail (LQ bigger than the crop), while
    degrading the 32 px crop by the same scale 2 loses more than degrading the source by 2."""
    yy, xx = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    img = (((yy // 2 + xx // 2) % 2) * 160 + 40).astype(np.uint8)  # 2-px checks: detail at 64 px
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "face.png")
    clean = dict(blur_prob=0.0, noise_prob=0.0, jpeg_prob=0.0)

    def item(scale: float, at_source: bool) -> dict:
        deg = DegradationConfig(scale=(scale, scale), **clean)
        return FaceFolderDataset(tmp_path, 32, split="all", degradation=deg, degrade_at_source=at_source)[0]

    ref = FaceFolderDataset(tmp_path, 32, split="all")
    one = item(1.0, True)
    assert torch.equal(one["hq"], ref.load_hq(0))  # the target is unchanged
    assert one["lq"].shape == (3, 32, 32)
    err = {(s, a): float((item(s, a)["lq"] - item(s, a)["hq"]).abs().mean()) for s in (1.0, 2.0) for a in (True, False)}
    assert err[(1.0, True)] < 0.02  # the source resized to the crop: the target itself
    assert err[(2.0, True)] < err[(2.0, False)]  # 32 px input vs 16 px input


def test_train_degradation_changes_with_epoch(folder: Path) -> None:
    tr = FaceFolderDataset(folder, 32, split="train", degradation=DegradationConfig.tb(4))
    a = tr[1]["lq"]
    assert torch.equal(a, tr[1]["lq"])
    tr.set_epoch(1)
    assert not torch.equal(a, tr[1]["lq"])


def test_grayscale_items(folder: Path) -> None:
    ds = FaceFolderDataset(folder, 32, split="all", grayscale_prob=1.0)
    it = ds[0]
    for k in ("hq", "lq"):
        assert torch.allclose(it[k][0], it[k][1], atol=2 / 255)
        assert torch.allclose(it[k][1], it[k][2], atol=2 / 255)


def test_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(UserError):
        FaceFolderDataset(tmp_path / "missing", 32)
    with pytest.raises(UserError):
        FaceFolderDataset(folder, 32, split="test")  # type: ignore[arg-type]
    with pytest.raises(UserError):
        FaceFolderDataset(folder, 32, split="val", val_fraction=0.0)
    with pytest.raises(UserError):
        FaceFolderDataset(folder, 32, align=True)


@needs_utk
def test_template_of_utk_crops_matches_known_eye_positions() -> None:
    paths = list_images(UTK)
    t, used = estimate_template(paths, n=40, seed=1)
    assert used == 40
    px = t * 200
    assert np.abs(px[0] - [57, 57]).max() < 5, px[0]
    assert np.abs(px[1] - [136, 59]).max() < 5, px[1]
    assert px[3, 1] > px[2, 1] > px[0, 1]  # mouth below nose below eyes


@needs_utk
def test_align_to_template_puts_landmarks_on_template() -> None:
    from rmmvideo.config import ModelConfig

    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "models" / "rmm-small.yaml"
    template = np.asarray(ModelConfig.from_yaml(cfg_path).template)
    img = load_rgb(sorted(UTK.glob("*.jpg"))[100])
    # put the face off-centre in a larger, rotated canvas: a non-aligned photo
    canvas = Image.new("RGB", (400, 360), (40, 80, 120))
    canvas.paste(Image.fromarray(img).rotate(12, resample=Image.BICUBIC, expand=False), (150, 90))
    out = align_to_template(np.asarray(canvas), 128, template)
    assert out is not None and out.shape == (128, 128, 3)
    pts = landmarks5(out, tight=True)
    assert pts is not None
    assert np.abs(pts[:2] - template[:2] * 128).max() < 6  # eyes land on the template
    assert align_to_template(np.zeros((100, 100, 3), np.uint8), 64, template) is None


def test_pack_faces_keeps_splits_and_pixels(tmp_path):
    """pipelines/pack_faces.py: a size-capped, seeded subset at the crop size; every face keeps
    its split; the packed faces are the dataset's HQ crops up to JPEG error."""
    from PIL import Image

    from rmmvideo.train.data import FaceFolderDataset, split_of

    pack = load_pipeline("pack_faces")
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((60, 50), Image.BICUBIC).save(src / f"face_{i:03d}.jpg", quality=95)
    names = sorted(p.name for p in src.iterdir())
    n_val = sum(split_of(n, 0.2) == "val" for n in names)
    assert 2 <= n_val < 40
    dst = tmp_path / "packed"
    assert pack.main([str(src), str(dst), "--size", "32", "--max-mb", "0.012", "--val", "2", "--val-fraction", "0.2"]) == 0
    packed = sorted(p.name for p in dst.iterdir())
    vals = [n for n in packed if split_of(n, 0.2) == "val"]
    trains = [n for n in packed if split_of(n, 0.2) == "train"]
    assert vals == [n for n in names if split_of(n, 0.2) == "val"][:2]
    assert 0 < len(trains) < 40 - n_val  # capped by size
    assert sum((dst / n).stat().st_size for n in packed) <= 12_000 + sum((dst / n).stat().st_size for n in vals)
    a = FaceFolderDataset(src, 32, split="train", val_fraction=0.2)
    b = FaceFolderDataset(dst, 32, split="train", val_fraction=0.2)
    i = a.names.index(b.names[0])
    assert (a.load_hq(i) - b.load_hq(0)).abs().mean() < 0.02
    assert pack.main([str(src), str(dst)]) == 2  # never overwrites
    assert not list(tmp_path.glob("*partial*"))
