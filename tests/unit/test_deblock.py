"""--deblock: the artefact CNN, its weights file, and the stage that cleans face regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.models.artefact import (
    ArtefactCNN,
    ArtefactConfig,
    default_artefact_path,
    load_artefact,
    save_artefact,
)
from rmmvideo.video.deblock import Deblocker, deblock_plans
from rmmvideo.video.io_decode import DecodedFrame
from rmmvideo.video.render import FramePlan

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _face(cx: float, cy: float, size: float):
    from types import SimpleNamespace

    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([cx + size / 2 * np.cos(t), cy + size / 2 * np.sin(t)], 1)
    return SimpleNamespace(landmarks68=lm, track_id=0)


class _AddConstant(torch.nn.Module):
    config = ArtefactConfig()

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        return x + 0.1


def test_untrained_model_is_the_identity_and_the_file_keeps_its_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 17, 23)
    assert torch.equal(ArtefactCNN(ArtefactConfig(8, 2))(x), x)
    model = ArtefactCNN(ArtefactConfig(8, 2))
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    p = save_artefact(model, tmp_path / "a.safetensors", {"steps": 3})
    back = load_artefact(p)
    assert back.config == ArtefactConfig(8, 2) and not back.training
    assert torch.allclose(back(x), model(x))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError, match="not a codec-artefact weights file"):
        load_artefact(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="not found"):
        load_artefact(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_only_face_regions_change_feathered_at_their_edge(dtype: type) -> None:
    peak = np.iinfo(dtype).max
    image = np.full((120, 160, 3), peak // 4, dtype)
    d = Deblocker(_AddConstant(), torch.device("cpu"))
    assert d.clean(image, []) is image
    out = d.clean(image, [_face(80, 60, 40)])
    assert out is not image and out.dtype == dtype and d.faces_cleaned == 1
    changed = np.abs(out.astype(np.int64) - image.astype(np.int64)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    # the region: the landmarks' box (60..100, 40..80) grown by 0.3 of its size (12 px)
    assert xs.min() >= 48 and xs.max() <= 113 and ys.min() >= 28 and ys.max() <= 93
    assert int(out[60, 80, 0]) - int(image[60, 80, 0]) == pytest.approx(0.1 * peak, abs=1)
    assert int(out[30, 50, 0]) - int(image[30, 50, 0]) < 0.05 * peak  # feathered towards the edge
    assert np.array_equal(image, np.full_like(image, peak // 4))  # the input is not modified


class _RecordQP(torch.nn.Module):
    config = ArtefactConfig(qp_input=True)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(qp)
        return x


def test_the_model_sees_each_regions_quantisers_and_auto_needs_them() -> None:
    from rmmvideo.video.quantiser import QPMap

    image = np.full((64, 96, 3), 100, np.uint8)
    qp = QPMap(np.array([[20, 30, 40, 50, 51, 51], [10, 10, 10, 10, 10, 10]], np.float32), (32.0, 16.0))
    model = _RecordQP()
    d = Deblocker(model, torch.device("cpu"), needs_qp=True)
    assert d.clean(image, [_face(40, 20, 20)]) is image and model.seen == []  # auto: no quantiser, no change
    d.clean(image, [_face(40, 20, 20)], qp)
    got = model.seen[-1]
    assert got is not None and got.shape[:2] == (1, 1)
    # the region is x 24..57, y 4..37: columns of blocks 1..3 (QP 30, 40, 50), rows 0..1
    assert got[0, 0, 0].mul(51).round().unique().tolist() == [30, 40, 50]
    assert got[0, 0, :, 0].mul(51).round().unique().tolist() == [10, 30]
    Deblocker(model, torch.device("cpu")).clean(image, [_face(40, 20, 20)])  # on: unknown quantiser
    assert model.seen[-1] is None


def test_no_deblocker_passes_the_plans_through() -> None:
    plan = FramePlan(DecodedFrame(0, 0, 0.0, np.zeros((8, 8, 3), np.uint8)), [])
    assert next(deblock_plans([plan], None)) is plan
    assert next(deblock_plans([plan], Deblocker(_AddConstant(), torch.device("cpu")))) is plan  # no face


@pytest.mark.skipif(not (SHARED / "faces" / "utkface").is_dir(), reason="shared face crops not found")
def test_bundled_weights_undo_h264_on_held_out_faces() -> None:
    """The shipped weights on validation faces (never trained on), degraded as in training:
    closer to the clean face than the decoded one, on most faces and on average."""
    from rmmvideo.train.data import list_images, load_rgb, split_of, to_tensor
    from rmmvideo.train.degrade import codec_roundtrip, downsample

    assert default_artefact_path().is_file()
    model = load_artefact()
    root = SHARED / "faces" / "utkface"
    val = [p for p in list_images(root) if split_of(p.relative_to(root).as_posix(), 0.05) == "val"][:12]
    gains = []
    for i, p in enumerate(val):
        clean = downsample(to_tensor(load_rgb(p)), 1.5).clamp(0, 1)
        lq = codec_roundtrip(clean, "h264", 32, frames=3, seed=i).clamp(0, 1)
        with torch.inference_mode():
            out = model(lq[None])[0].clamp(0, 1)
        gains.append(float((lq - clean).square().mean() / (out - clean).square().mean()))
    assert np.mean(gains) > 1.05 and np.mean(np.array(gains) > 1) >= 0.75, gains
