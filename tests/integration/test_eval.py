"""`rmmvideo eval` end to end on a handful of real UTK faces, and the evaluator with a tiny
randomly initialised RMM."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rmmvideo.cli.main import main
from rmmvideo.config import ModelConfig
from rmmvideo.errors import UserError
from rmmvideo.eval.evaluate import degrade_for_protocol, evaluate, item_rng, model_restore_fn
from rmmvideo.train.data import FaceFolderDataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UTK = DATA / "faces" / "utkface"
pytestmark = pytest.mark.skipif(not UTK.is_dir(), reason=f"UTKFace crops not found at {UTK}")

TINY = ModelConfig(
    size=64, unet_channels=(8, 8, 8), decoder_channels=(8, 8, 8), z_n_dim=16, mapping_layers=2,
    mapping_dim=16, wavelet_levels=2, memory_size=8, key_dim=8, key_width=8,
)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("faces")
    for f in sorted(UTK.glob("*.jpg"))[1000:1004]:
        shutil.copy(f, d / f.name)
    return d


def test_cli_writes_json_and_markdown_with_bicubic_rows(faces: Path, tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["eval", str(faces), "--protocol", "tb", "--scale", "4", "--split", "all", "--limit", "3",
               "--size", "64", "--bicubic-only", "--json", str(out_json), "--md", str(out_md), "--quiet"])
    assert rc == 0
    rep = json.loads(out_json.read_text())
    assert rep["protocol"] == "tb" and rep["scale"] == 4.0 and rep["n_images"] == 3
    bic = rep["methods"]["bicubic"]
    for k in ("psnr", "ssim", "ms_ssim", "hist_ciede", "fed", "lle"):
        assert k in bic and bic[k] is not None
    assert 15.0 < bic["psnr"] < 40.0 and 0.0 < bic["ssim"] < 1.0 and bic["fed"] > 0.0
    assert len(rep["per_image"]) == 3 and all("bicubic/psnr" in r for r in rep["per_image"])
    assert rep["skipped"]["lpips"].startswith("skipped: no local weights")
    md = out_md.read_text()
    assert "| bicubic |" in md and "skipped: no local weights" in md


def test_cli_is_deterministic_and_protocols_order(faces: Path, tmp_path: Path) -> None:
    psnrs = {}
    for proto in ("td4", "td16", "td4"):
        out = tmp_path / f"{proto}.json"
        assert main(["eval", str(faces), "--protocol", proto, "--split", "all", "--size", "64",
                     "--no-face-metrics", "--bicubic-only", "--json", str(out), "--quiet"]) == 0
        p = json.loads(out.read_text())["methods"]["bicubic"]["psnr"]
        if proto in psnrs:
            assert p == psnrs[proto]
        psnrs[proto] = p
    assert psnrs["td4"] > psnrs["td16"]  # less downsampling, better bicubic


def test_cli_user_errors(faces: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(faces), "--weights", str(faces / "missing.safetensors")]) == 2
    assert main(["eval", str(faces), "--align", "--bicubic-only"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_with_tiny_random_weights(faces: Path, tmp_path: Path) -> None:
    from rmmvideo.models import weights
    from rmmvideo.models.rmm import RMM

    torch.manual_seed(0)
    path = weights.save_pretrained(RMM(TINY), tmp_path / "tiny.safetensors")
    out = tmp_path / "r.json"
    rc = main(["eval", str(faces), "--protocol", "td4", "--split", "all", "--weights", str(path),
               "--batch-size", "2", "--json", str(out), "--md", str(tmp_path / "r.md"), "--quiet"])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["size"] == TINY.size and rep["n_images"] == 4
    assert set(rep["methods"]) == {"bicubic", "rmm (tiny.safetensors)"}
    assert rep["timing"]["restore"] > 0.0
    assert "| rmm (tiny.safetensors) |" in (tmp_path / "r.md").read_text()


def test_evaluate_with_tiny_random_rmm(faces: Path) -> None:
    from rmmvideo.models.rmm import RMM

    torch.manual_seed(0)
    model = RMM(TINY)
    ds = FaceFolderDataset(faces, TINY.size, split="all")
    rep = evaluate(ds, model_restore_fn(model, "cpu", seed=0), "td8", batch_size=3,
                   face_metrics=False, method_name="rmm-tiny")
    assert set(rep.methods) == {"bicubic", "rmm-tiny"}
    assert rep.n_images == 4 and rep.timing["restore"] > 0.0
    again = evaluate(ds, model_restore_fn(model, "cpu", seed=0), "td8", batch_size=3, face_metrics=False)
    assert rep.methods["rmm-tiny"]["psnr"] == again.methods["rmm"]["psnr"]
    assert "| rmm-tiny |" in rep.to_markdown()
    # an identity "restoration" scores exactly like bicubic
    ident = evaluate(ds, lambda x: x, "td8", face_metrics=False, method_name="identity")
    assert ident.methods["identity"]["psnr"] == pytest.approx(ident.methods["bicubic"]["psnr"])
    with pytest.raises(UserError):
        evaluate(ds, lambda x: x[:, :, :32], "td8", face_metrics=False)


def test_protocol_degradations(faces: Path) -> None:
    ds = FaceFolderDataset(faces, 64, split="all")
    hq = ds.load_hq(0)
    assert degrade_for_protocol(hq, "td16", 4, item_rng(0, "a")).shape == (3, 4, 4)
    a = degrade_for_protocol(hq, "tb", 4, item_rng(0, "a"))
    assert a.shape == (3, 16, 16)
    assert torch.equal(a, degrade_for_protocol(hq, "tb", 4, item_rng(0, "a")))
    assert not torch.equal(a, degrade_for_protocol(hq, "tb", 4, item_rng(1, "a")))
    with pytest.raises(UserError):
        degrade_for_protocol(hq, "td3", 4, item_rng(0, "a"))
