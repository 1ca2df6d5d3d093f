import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rmmvideo.models.rm3 import RM3Block


def _conv_np(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Direct 'same' 2-D convolution (cross-correlation) in numpy. x (C,H,W), w (O,C,k,k)."""
    o, _, k, _ = w.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    h, ww = x.shape[1:]
    out = np.zeros((o, h, ww))
    for i in range(k):
        for j in range(k):
            out += np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i : i + h, j : j + ww])
    return out + b[:, None, None]


def _softmax0(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def _reference(block: RM3Block, h, z_s, z_n, z_w) -> np.ndarray:
    """Eqs. 1-7 written out per sample in numpy float64."""
    P = {k: v.detach().numpy() for k, v in block.state_dict().items()}
    c = block.channels
    eps = 1e-5
    outs = []
    for bi in range(h.shape[0]):
        x = h[bi]
        mu_i = x.mean(axis=(1, 2), keepdims=True)
        sd_i = np.sqrt(((x - mu_i) ** 2).mean(axis=(1, 2), keepdims=True) + eps)
        h_i = (x - mu_i) / sd_i  # eq. 1
        mu_l = x.mean()
        sd_l = np.sqrt(((x - mu_l) ** 2).mean() + eps)
        h_l = (x - mu_l) / sd_l  # eq. 4
        s = _conv_np(z_s[bi], P["s_affine.weight"], P["s_affine.bias"])  # (4C, H, W)
        n = P["n_affine.weight"] @ z_n[bi] + P["n_affine.bias"]  # (4C,)
        w = P["w_affine.weight"] @ z_w[bi] + P["w_affine.bias"]

        def aff(t, k):  # k: 0 gamma_I, 1 beta_I, 2 gamma_L, 3 beta_L
            v = t[k * c : (k + 1) * c]
            v = v if v.ndim == 3 else v[:, None, None]
            return v

        S_I, N_I, W_I = (aff(t, 0) * h_i + aff(t, 1) for t in (s, n, w))  # eq. 2
        S_L, N_L, W_L = (aff(t, 2) * h_l + aff(t, 3) for t in (s, n, w))  # eq. 5
        m_i = _softmax0(_conv_np(h_i, P["att_in.weight"], P["att_in.bias"]))
        m_l = _softmax0(_conv_np(h_l, P["att_ln.weight"], P["att_ln.bias"]))
        H_I = S_I * m_i[0] + N_I * m_i[1] + W_I * m_i[2]  # eq. 3
        H_L = S_L * m_l[0] + N_L * m_l[1] + W_L * m_l[2]  # eq. 6
        m_o = 1.0 / (1.0 + np.exp(-_conv_np(x, P["att_out.weight"], P["att_out.bias"])))
        outs.append(H_I * m_o + H_L * (1.0 - m_o))  # eq. 7
    return np.stack(outs)


def _random_block(seed: int, c=4, cs=3, dn=5, dw=6, k=3) -> RM3Block:
    torch.manual_seed(seed)
    block = RM3Block(c, cs, dn, dw, kernel_size=k).double()
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0.0, 0.5)
    return block


@pytest.mark.parametrize("k", [1, 3])
def test_matches_direct_equations(k: int) -> None:
    block = _random_block(0, k=k)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64) * 3 + 1
    z_s = torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64)
    z_n = torch.randn(2, 5, generator=g, dtype=torch.float64)
    z_w = torch.randn(2, 6, generator=g, dtype=torch.float64)
    out = block(h, z_s, z_n, z_w)
    ref = _reference(block, h.numpy(), z_s.numpy(), z_n.numpy(), z_w.numpy())
    assert out.shape == (2, 4, 7, 6)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-10, atol=1e-10)


def test_z_s_is_resized_to_h() -> None:
    block = _random_block(2)
    h = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    z_s = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    z_n, z_w = torch.randn(1, 5, dtype=torch.float64), torch.randn(1, 6, dtype=torch.float64)
    up = F.interpolate(z_s, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(block(h, z_s, z_n, z_w), block(h, up, z_n, z_w))
    # each conditioning input matters
    assert not torch.allclose(block(h, up, z_n, z_w), block(h, up, z_n + 1, z_w))
    assert not torch.allclose(block(h, up, z_n, z_w), block(h, up, z_n, z_w + 1))
    assert not torch.allclose(block(h, up, z_n, z_w), block(h, up * 2, z_n, z_w))


def test_gradcheck() -> None:
    block = _random_block(3, c=2, cs=2, dn=3, dw=3)
    g = torch.Generator().manual_seed(4)
    inputs = (
        torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 3, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(1, 3, generator=g, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(block, inputs, eps=1e-6, atol=1e-5)
    # gradients reach the block's own parameters too
    block(*inputs).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_shape_errors() -> None:
    block = RM3Block(4, 3, 5, 6)
    h = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="z_n shape"):
        block(h, torch.randn(2, 3, 8, 8), torch.randn(2, 4), torch.randn(2, 6))
    with pytest.raises(ValueError, match="channels"):
        block(torch.randn(2, 5, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 5), torch.randn(2, 6))
