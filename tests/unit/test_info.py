import json
from pathlib import Path

import pytest
import torch

from rmmvideo.cli.main import main
from rmmvideo.config import ModelConfig
from rmmvideo.models.rmm import RMM
from rmmvideo.models.weights import save_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"
TINY = ModelConfig(
    name="tiny", size=32, unet_channels=(4, 8, 8), decoder_channels=(8, 8, 4), z_n_dim=8,
    mapping_layers=2, mapping_dim=8, wavelet_levels=2, memory_size=6, key_dim=8, key_width=4,
)


def test_info_config_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--config", str(CONFIGS / "rmm-small.yaml"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    cfg = ModelConfig.from_yaml(CONFIGS / "rmm-small.yaml")
    pc = RMM(cfg).parameter_counts()
    assert info["parameters"] == pc
    assert info["rm3_blocks"] == cfg.n_rm3 and info["z_w_dim"] == cfg.z_w_dim
    assert info["crop_size"] == 128 and info["memory_filled"] is None
    assert info["template_name"] == cfg.template_name


def test_info_paper_config_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--config", str(CONFIGS / "rmm-512.yaml")]) == 0
    out = capsys.readouterr().out
    assert "RM3 blocks   7 at 8, 16, 32, 64, 128, 256, 512 px" in out
    assert "Z_W          765" in out and "Z_N          512" in out
    assert "982 slots" in out and "512x512" in out
    assert "total" in out


def test_info_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    m = RMM(TINY)
    m.memory.update(torch.randn(1, 8), torch.rand(1, 45))
    p = save_pretrained(m, tmp_path / "w.safetensors", extra={"steps": 3})
    assert main(["info", "--weights", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["memory_filled"] == 1 and info["memory_size"] == 6
    assert info["source"]["extra"] == {"steps": 3}
    assert info["parameters"]["total"] == sum(t.numel() for t in m.parameters())
    assert main(["info", "--weights", str(p)]) == 0
    assert "1 / 6 slots filled" in capsys.readouterr().out


def test_info_missing_file_is_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in capsys.readouterr().err


def test_info_invalid_architecture_is_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config file or weights file describing an invalid model: one line, exit 2 (the CLI maps
    ModelConfig's ValueError to a user error)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  name: bad\n  rm3_kernel: 2\n")
    assert main(["info", "--config", str(bad_yaml)]) == 2
    err = capsys.readouterr().err
    assert "rm3_kernel" in err and str(bad_yaml) in err and err.count("\n") == 1
    p = save_pretrained(RMM(TINY), tmp_path / "w.safetensors")
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    meta["rmm_config"] = json.dumps({**TINY.to_dict(), "rm3_kernel": 2})
    bad_weights = tmp_path / "bad.safetensors"
    save_file(load_file(str(p)), str(bad_weights), metadata=meta)
    assert main(["info", "--weights", str(bad_weights)]) == 2
    err = capsys.readouterr().err
    assert "rm3_kernel" in err and "invalid rmm_config" in err and err.count("\n") == 1


def test_info_default_weights(capsys: pytest.CaptureFixture[str]) -> None:
    from rmmvideo.models.weights import default_weights_path

    rc = main(["info", "--json"])
    if default_weights_path().is_file():
        assert rc == 0
        assert json.loads(capsys.readouterr().out)["memory_filled"] is not None
    else:
        assert rc == 2
        assert "no bundled weights" in capsys.readouterr().err
