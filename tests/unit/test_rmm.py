import time
from pathlib import Path

import pytest
import torch

from rmmvideo.config import ModelConfig
from rmmvideo.errors import UserError
from rmmvideo.models.keynet import KeyNet
from rmmvideo.models.mapping import MappingNetwork
from rmmvideo.models.rmm import RMM, make_noise
from rmmvideo.models.unet import UNet
from rmmvideo.models.wavelet import wavelet_style_code

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "models"

TINY = ModelConfig(
    name="tiny", size=32, unet_channels=(4, 8, 8), decoder_channels=(8, 8, 4), z_n_dim=8,
    mapping_layers=2, mapping_dim=8, wavelet_levels=2, memory_size=6, key_dim=8, key_width=4,
)


def _model(seed: int = 0) -> RMM:
    torch.manual_seed(seed)
    return RMM(TINY).eval()


def _filled_model() -> RMM:
    m = _model()
    g = torch.Generator().manual_seed(5)
    x_lq = torch.rand(4, 3, 32, 32, generator=g)
    x_hq = torch.rand(4, 3, 32, 32, generator=g)
    x_hq[1] *= torch.linspace(0, 1, 32)  # make the codes differ
    x_hq[2, :, ::2] = 0
    out = m.forward_train(x_lq, x_hq, torch.randn(4, 8, generator=g))
    m.update_memory(out["q"], out["z_w"])
    return m


def test_unet_and_mapping_shapes() -> None:
    unet = UNet([4, 8, 16])
    x_mr, z_s = unet(torch.rand(2, 3, 32, 32))
    assert x_mr.shape == (2, 3, 32, 32)
    assert [tuple(z.shape) for z in z_s] == [(2, 16, 8, 8), (2, 8, 16, 16), (2, 4, 32, 32)]
    cfg = ModelConfig(size=32, unet_channels=(4, 8, 16), decoder_channels=(8, 8, 8), wavelet_levels=2)
    assert [z.shape[-1] for z in z_s] == cfg.block_resolutions()
    mp = MappingNetwork(8, 6, 2, 3)
    w = mp(torch.randn(5, 8))
    assert w.shape == (5, 3, 6)
    assert not torch.allclose(w[:, 0], w[:, 1])  # one head per level


def test_generator_shapes_and_gradients() -> None:
    m = _model()
    m.train()
    x = torch.rand(2, 3, 32, 32)
    x_hr, x_mr = m.generator(x, torch.randn(2, 8), torch.randn(2, 45))
    assert x_hr.shape == x_mr.shape == (2, 3, 32, 32)
    (x_hr.square().mean() + x_mr.square().mean()).backward()
    no_grad = [n for n, p in m.generator.named_parameters() if p.grad is None]
    assert no_grad == []
    with pytest.raises(ValueError, match="z_w shape"):
        m.generator(x, torch.randn(2, 8), torch.randn(2, 44))


def test_restore_deterministic_with_noise_and_slot() -> None:
    m = _filled_model()
    x = torch.rand(3, 3, 50, 40)  # any size: resized to 32 inside
    noise = make_noise(7, 3, 8)
    slots = torch.tensor([0, 1, 0])
    a = m.restore(x, noise=noise, slots=slots)
    b = m.restore(x.clone(), noise=noise.clone(), slots=slots.clone())
    assert a.x_hr.shape == a.x_mr.shape == (3, 3, 32, 32)
    assert torch.equal(a.x_hr, b.x_hr) and torch.equal(a.x_mr, b.x_mr)
    assert torch.equal(a.slots, slots) and bool(a.sims.isnan().all())
    assert float(a.x_hr.min()) >= 0.0 and float(a.x_hr.max()) <= 1.0
    m.train()
    bn_before = m.keynet.bn1.running_mean.clone()
    t = m.restore(x, noise=noise)  # training mode: restore still runs in eval mode
    assert m.training and torch.equal(bn_before, m.keynet.bn1.running_mean)
    m.eval()
    assert torch.equal(t.x_hr, m.restore(x, noise=noise).x_hr)
    c = m.restore(x, noise=make_noise(8, 3, 8), slots=slots)
    assert not torch.equal(a.x_hr, c.x_hr)  # noise matters
    torch.manual_seed(3)
    d = m.restore(x)
    torch.manual_seed(3)
    e = m.restore(x)
    assert torch.equal(d.x_hr, e.x_hr)  # global RNG path reproducible


def test_restore_uses_memory_values() -> None:
    m = _filled_model()
    x = torch.rand(2, 3, 32, 32)
    noise = make_noise(1, 2, 8)
    vals, top, sims = m.memory.retrieve(m.query(x))
    out = m.restore(x, noise=noise)
    assert torch.equal(out.slots, top)
    assert torch.allclose(out.sims, sims)
    x_hr, _ = m.generator(x, noise, vals)
    assert torch.allclose(out.x_hr, x_hr.clamp(0, 1))
    # explicit slot reads that value; -1 entries are retrieved
    assert m.memory.filled[:2].all() and not m.memory.filled[5]
    mixed = m.restore(x, noise=noise, slots=torch.tensor([1, -1]))
    assert mixed.slots.tolist() == [1, int(top[1])]
    x_hr2, _ = m.generator(x, noise, torch.stack([m.memory.values[1], vals[1]]))
    assert torch.allclose(mixed.x_hr, x_hr2.clamp(0, 1))
    with pytest.raises(ValueError, match="empty"):
        m.restore(x, noise=noise, slots=torch.tensor([5, 5]))
    with pytest.raises(ValueError, match="out of range"):
        m.restore(x, noise=noise, slots=torch.tensor([6, 0]))


def test_restore_empty_memory_falls_back_to_zero_code() -> None:
    m = _model()
    x = torch.rand(2, 3, 32, 32)
    noise = make_noise(0, 2, 8)
    out = m.restore(x, noise=noise)
    assert out.slots.tolist() == [-1, -1] and out.sims.tolist() == [0.0, 0.0]
    x_hr, _ = m.generator(x, noise, torch.zeros(2, 45))
    assert torch.allclose(out.x_hr, x_hr.clamp(0, 1))



def test_bad_inputs_raise_library_errors() -> None:
    """Shape and type mistakes of a caller are ValueError/TypeError, never the CLI's UserError."""
    m = _model()
    x = torch.rand(2, 3, 32, 32)
    cases = [
        (ValueError, "expected images", lambda: m.restore(x[:, :2])),
        (TypeError, "float images", lambda: m.restore((x * 255).to(torch.uint8))),
        (ValueError, "noise shape", lambda: m.restore(x, noise=torch.zeros(2, 7))),
        (ValueError, "slots shape", lambda: m.restore(x, slots=torch.tensor([-1]))),
        (ValueError, "decoder_channels", lambda: ModelConfig(decoder_channels=(), unet_channels=())),
        (ValueError, "rm3_kernel", lambda: ModelConfig(rm3_kernel=2)),
    ]
    for kind, match, call in cases:
        with pytest.raises(kind, match=match) as e:
            call()
        assert not isinstance(e.value, UserError)


def test_forward_train_and_memory_update() -> None:
    m = _model()
    m.train()
    g = torch.Generator().manual_seed(2)
    x_lq, x_hq = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
    out = m.forward_train(x_lq, x_hq, torch.randn(4, 8, generator=g))
    assert out["x_hr"].shape == out["x_mr"].shape == (4, 3, 32, 32)
    assert out["q"].shape == (4, 8)
    assert torch.allclose(out["q"].norm(dim=1), torch.ones(4))
    assert torch.equal(out["z_w"], wavelet_style_code(x_hq, 2))
    assert float(out["loss_wmm"].detach()) == 0.0  # empty memory
    slots = m.update_memory(out["q"], out["z_w"])
    assert slots.shape == (4,) and m.memory.n_filled >= 1
    # with a filled memory holding a similar and a very different code, the triplet loss
    # trains the query network
    m.memory.values[1] = torch.zeros(45)
    m.memory.values[1, 0] = 5.0
    m.memory.keys[1] = out["q"][0].detach()
    m.memory.filled[1] = True
    m.memory.values[0] = out["z_w"][0]
    m.memory.keys[0] = -out["q"][0].detach()
    m.memory.filled[0] = True
    x_hq[1] = x_hq[0]
    out = m.forward_train(x_lq[:2], x_hq[:2], torch.randn(2, 8))
    assert float(out["loss_wmm"].detach()) > 0
    m.zero_grad()
    out["loss_wmm"].backward()
    assert m.keynet.proj.weight.grad is not None and float(m.keynet.proj.weight.grad.abs().sum()) > 0


def test_make_noise_deterministic_and_private() -> None:
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b = make_noise(42, 3, 16), make_noise(42, 3, 16)
    assert torch.equal(a, b) and a.shape == (3, 16)
    assert not torch.equal(a, make_noise(43, 3, 16))
    assert torch.equal(before, torch.random.get_rng_state())


def test_parameter_counts_add_up() -> None:
    pc = _model().parameter_counts()
    assert pc["unet"] + pc["mapping"] + pc["rm3_decoder"] + pc["keynet"] == pc["total"]
    assert min(pc.values()) > 0


def _torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision resnet18 state-dict names and shapes, written out by hand."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for k in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{k}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    cin = 64
    for li, c in enumerate((64, 128, 256, 512), start=1):
        for bi in range(2):
            p = f"layer{li}.{bi}"
            shapes[f"{p}.conv1.weight"] = (c, cin if bi == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if bi == 0 and li > 1:
                shapes[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                bn(f"{p}.downsample.1", c)
        cin = c
    shapes["fc.weight"] = (1000, 512)
    shapes["fc.bias"] = (1000,)
    return shapes


def test_keynet_loads_torchvision_layout(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, s in _torchvision_resnet18_shapes().items():
        sd[k] = torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    net = KeyNet(128, 64)
    net.load_imagenet(path)
    assert torch.equal(net.layer3[0].downsample[0].weight, sd["layer3.0.downsample.0.weight"])
    assert torch.equal(net.bn1.running_var, sd["bn1.running_var"])
    assert net.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 128)
    with pytest.raises(UserError, match="not found"):
        net.load_imagenet(tmp_path / "missing.pth")
    with pytest.raises(UserError, match="width 32|ResNet18"):
        KeyNet(128, 32).load_imagenet(path)
    bad = dict(sd)
    del bad["layer4.1.bn2.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="missing"):
        net.load_imagenet(tmp_path / "bad.pth")


@pytest.mark.slow
def test_rmm_512_builds_and_restores() -> None:
    cfg = ModelConfig.from_yaml(CONFIGS / "rmm-512.yaml")
    assert (cfg.n_rm3, cfg.z_w_dim, cfg.z_n_dim, cfg.memory_size) == (7, 765, 512, 982)
    torch.manual_seed(0)
    m = RMM(cfg).eval()
    t = time.perf_counter()
    out = m.restore(torch.rand(1, 3, 128, 128), noise=make_noise(0, 1, 512))
    elapsed = time.perf_counter() - t
    assert out.x_hr.shape == out.x_mr.shape == (1, 3, 512, 512)
    assert bool(torch.isfinite(out.x_hr).all())
    assert elapsed < 120


def test_forward_train_can_condition_on_the_retrieved_code() -> None:
    m = _filled_model()
    g = torch.Generator().manual_seed(9)
    x_lq, x_hq = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    z = torch.randn(3, 8, generator=g)
    with torch.no_grad():
        q = m.keynet(x_lq)
        got, _, _ = m.memory.retrieve(q)
        z_gt = wavelet_style_code(x_hq, 2)
        mask = torch.tensor([True, False, True])
        out = m.forward_train(x_lq, x_hq, z, use_retrieved=mask)
        ref, _ = m.generator(x_lq, z, torch.where(mask[:, None], got, z_gt))
        plain = m.forward_train(x_lq, x_hq, z)
    assert torch.allclose(out["x_hr"], ref)
    assert torch.equal(out["z_w"], z_gt)  # the memory still stores the ground truth's code
    assert torch.allclose(out["x_hr"][1], plain["x_hr"][1])
    assert not torch.allclose(out["x_hr"][0], plain["x_hr"][0])
    empty = _model()
    with torch.no_grad():
        a = empty.forward_train(x_lq, x_hq, z, use_retrieved=mask)["x_hr"]
        b = empty.forward_train(x_lq, x_hq, z)["x_hr"]
    assert torch.equal(a, b)  # nothing to retrieve yet: the ground truth's code


def test_global_residual_untrained_model_returns_its_input_upscaled() -> None:
    from dataclasses import replace

    import torch.nn.functional as F

    cfg = replace(TINY, global_residual=True)
    torch.manual_seed(0)
    m = RMM(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 16, 16, generator=g)
    up = F.interpolate(x, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    r = m.restore(x, noise=torch.randn(2, 8, generator=g))
    assert torch.allclose(r.x_hr, up, atol=1e-6) and torch.allclose(r.x_mr, up, atol=1e-6)
    # without the flag the decoder adds a small random correction from the start
    torch.manual_seed(0)
    plain = RMM(TINY).restore(x, noise=torch.randn(2, 8, generator=g))
    assert float((plain.x_hr - up).abs().max()) > 1e-4
    # still trainable: the zero output layer gets a gradient
    out = m.forward_train(up, torch.rand(2, 3, 32, 32, generator=g), torch.randn(2, 8, generator=g))
    (out["x_hr"] - 0.5).square().mean().backward()
    assert float(m.generator.to_rgb.weight.grad.abs().sum()) > 0
    # the flag travels with the config; configs written before it load as off
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert "global_residual" not in TINY.to_dict()  # off: config JSON as before the flag
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY and not TINY.global_residual


def test_refine_head_starts_as_the_identity_and_travels_with_the_config() -> None:
    from dataclasses import replace

    cfg = replace(TINY, refine_layers=3, refine_channels=8)
    torch.manual_seed(0)
    plain = RMM(TINY)
    torch.manual_seed(0)
    headed = RMM(cfg)
    missing, unexpected = headed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("generator.refine.") for k in missing)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 32, 32, generator=g)
    z = torch.randn(2, 8, generator=g)
    assert torch.equal(plain.restore(x, noise=z).x_hr, headed.restore(x, noise=z).x_hr)
    assert headed.parameter_counts()["refine"] == 6 * 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 3 * 9 + 3
    # its zero output layer gets a gradient, and a trained head changes the output
    out = headed.forward_train(x, torch.rand(2, 3, 32, 32, generator=g), z)
    (out["x_hr"] - 0.5).square().mean().backward()
    last = headed.generator.refine.body[-1]
    assert float(last.weight.grad.abs().sum()) > 0
    with torch.no_grad():
        last.bias.fill_(0.1)
    assert not torch.equal(plain.restore(x, noise=z).x_hr, headed.restore(x, noise=z).x_hr)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert "refine_layers" not in TINY.to_dict()  # no head: config JSON as before the option
    with pytest.raises(ValueError, match="refine_layers"):
        replace(TINY, refine_layers=1)
