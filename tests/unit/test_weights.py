from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rmmvideo.config import ModelConfig
from rmmvideo.errors import UserError
from rmmvideo.models.rmm import RMM, make_noise
from rmmvideo.models.weights import (
    default_weights_path,
    from_pretrained,
    read_metadata,
    save_pretrained,
)

TINY = ModelConfig(
    name="tiny", size=32, unet_channels=(4, 8, 8), decoder_channels=(8, 8, 4), z_n_dim=8,
    mapping_layers=2, mapping_dim=8, wavelet_levels=2, memory_size=6, key_dim=8, key_width=4,
)


def _trained_like() -> RMM:
    torch.manual_seed(0)
    m = RMM(TINY)
    g = torch.Generator().manual_seed(1)
    x_lq, x_hq = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    x_hq[1, :, ::2] = 0
    out = m.forward_train(x_lq, x_hq, torch.randn(3, 8, generator=g))  # train mode: BN stats move
    m.update_memory(out["q"], out["z_w"])
    return m.eval()


def test_round_trip_bit_exact(tmp_path: Path) -> None:
    m = _trained_like()
    assert m.memory.n_filled >= 1
    p = save_pretrained(m, tmp_path / "sub" / "w.safetensors", extra={"steps": 12})
    assert p.is_file() and list(p.parent.iterdir()) == [p]  # no temp file left behind
    loaded = from_pretrained(p)
    assert not loaded.training
    assert loaded.config == m.config
    sd0, sd1 = m.state_dict(), loaded.state_dict()
    assert sd0.keys() == sd1.keys()
    for k in sd0:
        assert sd0[k].dtype == sd1[k].dtype and torch.equal(sd0[k], sd1[k]), k
    for name in ("keys", "values", "ages", "filled"):
        assert torch.equal(getattr(m.memory, name), getattr(loaded.memory, name))
    x = torch.rand(2, 3, 32, 32)
    noise = make_noise(3, 2, 8)
    a, b = m.restore(x, noise=noise), loaded.restore(x, noise=noise)
    assert torch.equal(a.x_hr, b.x_hr) and torch.equal(a.slots, b.slots)
    meta = read_metadata(p)
    assert meta["rmm_config"] == TINY.to_dict() or ModelConfig.from_dict(meta["rmm_config"]) == TINY
    assert meta["extra"] == {"steps": 12} and meta["rmmvideo_format"] == "1"


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        from_pretrained(tmp_path / "nope.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(UserError, match="rmm_config"):
        from_pretrained(plain)
    # tensors that do not match the embedded config
    p = save_pretrained(_trained_like(), tmp_path / "w.safetensors")
    sd = load_file(str(p))
    sd["generator.to_rgb.bias"] = torch.zeros(4)
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken), metadata=meta)
    with pytest.raises(UserError, match="do not match"):
        from_pretrained(broken)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="cannot read"):
        read_metadata(garbage)


def test_small_config_file_fits_the_bundle_limit(tmp_path: Path) -> None:
    cfg = ModelConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs/models/rmm-small.yaml")
    m = RMM(cfg)
    m.memory.filled[:] = True
    p = save_pretrained(m, tmp_path / "small.safetensors")
    assert p.stat().st_size <= 30 * 1024 * 1024
    assert 2_000_000 <= m.parameter_counts()["total"] <= 7_000_000  # a real model, a few M


def test_default_weights_path() -> None:
    p = default_weights_path()
    assert p.name == "rmm-small.safetensors" and p.parent.name == "weights"
    if p.is_file():
        m = from_pretrained()
        assert m.config.name == "rmm-small"
        size = p.stat().st_size
        assert size <= 30 * 1024 * 1024
    else:
        with pytest.raises(UserError, match="no bundled weights"):
            from_pretrained()


def test_half_precision_file_loads_into_float32_model(tmp_path: Path) -> None:
    m = _trained_like()
    half = RMM(TINY)
    half.load_state_dict(m.state_dict())
    p = save_pretrained(half.half(), tmp_path / "h.safetensors")
    assert load_file(str(p))["generator.to_rgb.weight"].dtype == torch.float16
    loaded = from_pretrained(p)
    w = loaded.generator.to_rgb.weight
    assert w.dtype == torch.float32
    assert torch.equal(w, m.generator.to_rgb.weight.half().float())
    assert torch.equal(loaded.memory.filled, m.memory.filled)
    assert loaded.memory.ages.dtype == torch.long
    out = loaded.restore(torch.rand(1, 3, 32, 32), noise=make_noise(0, 1, 8))
    assert bool(torch.isfinite(out.x_hr).all())
