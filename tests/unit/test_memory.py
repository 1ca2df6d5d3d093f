import pytest
import torch
import torch.nn.functional as F

from rmmvideo.models.memory import WaveletMemory, code_distribution, kl_w


def _fill(mem: WaveletMemory, keys: torch.Tensor, values: torch.Tensor) -> None:
    n = keys.shape[0]
    mem.keys[:n] = F.normalize(keys, dim=1)
    mem.values[:n] = values
    mem.filled[:n] = True


def test_kl_w_properties() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 30, generator=g), torch.randn(4, 30, generator=g)
    assert torch.allclose(kl_w(a, a), torch.zeros(4), atol=1e-6)
    assert bool((kl_w(a, b) > 0).all())
    # scale invariant (codes are compared as distributions)
    assert torch.allclose(kl_w(a * 5, b * 0.1), kl_w(a, b), atol=1e-5)
    assert torch.allclose(code_distribution(a).sum(-1), torch.ones(4))


def test_retrieve_top_cosine_among_filled() -> None:
    g = torch.Generator().manual_seed(1)
    mem = WaveletMemory(10, 8, 6)
    keys, values = torch.randn(6, 8, generator=g), torch.randn(6, 6, generator=g)
    _fill(mem, keys, values)
    q = torch.randn(5, 8, generator=g)
    vals, slots, sims = mem.retrieve(q)
    expect = (F.normalize(q, dim=1) @ F.normalize(keys, dim=1).t()).max(dim=1)
    assert torch.equal(slots, expect.indices)
    assert torch.allclose(sims, expect.values)
    assert torch.equal(vals, values[expect.indices])
    assert torch.equal(mem.read(slots), vals)
    assert bool((slots < 6).all())  # empty slots never win
    assert torch.equal(mem.read(torch.tensor([-1, 9])), torch.zeros(2, 6))


def test_retrieve_empty_memory() -> None:
    mem = WaveletMemory(4, 8, 6)
    vals, slots, sims = mem.retrieve(torch.randn(3, 8))
    assert torch.equal(slots, torch.full((3,), -1))
    assert torch.equal(vals, torch.zeros(3, 6)) and torch.equal(sims, torch.zeros(3))


def test_update_merges_when_similar() -> None:
    mem = WaveletMemory(4, 3, 5)
    k0 = torch.tensor([[1.0, 0.0, 0.0]])
    v0 = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    _fill(mem, k0, v0)
    q = torch.tensor([[0.0, 1.0, 0.0]])
    z = v0 * 1.01  # nearly the same distribution: KL ~ 0 < eta
    slots = mem.update(q, z)
    assert slots.tolist() == [0]
    assert torch.allclose(mem.keys[0], F.normalize(torch.tensor([1.0, 1.0, 0.0]), dim=0))
    assert torch.equal(mem.values[0], v0[0])  # value kept
    assert mem.n_filled == 1 and int(mem.ages[0]) == 0


def test_update_writes_oldest_when_different() -> None:
    mem = WaveletMemory(3, 2, 4, eta=0.1)
    vals = torch.eye(4)[:3] * 3 + 0.01  # three very different distributions
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    for i in range(3):  # fill slots one by one: empty slots come first
        assert mem.update(keys[i : i + 1], vals[i : i + 1]).tolist() == [i]
    assert mem.n_filled == 3
    assert mem.ages.tolist() == [2, 1, 0]
    new_v = torch.tensor([[0.01, 0.01, 0.01, 3.0]])
    slot = mem.update(torch.tensor([[1.0, 0.1]]), new_v)
    assert slot.tolist() == [0]  # the oldest slot
    assert torch.equal(mem.values[0], new_v[0])
    assert torch.allclose(mem.keys[0], F.normalize(torch.tensor([1.0, 0.1]), dim=0))
    assert mem.ages.tolist() == [0, 2, 1]


def test_triplet_gradient_step_moves_query() -> None:
    mem = WaveletMemory(4, 4, 6)
    pos_v = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    neg_v = torch.tensor([[10.0, 0.01, 0.01, 0.01, 0.01, 0.01]])
    _fill(mem, torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]), torch.cat([pos_v, neg_v]))
    z_w = pos_v * 0.5
    assert float(kl_w(pos_v, z_w)) < 0.7 < float(kl_w(neg_v, z_w))
    q = torch.tensor([[0.3, 0.9, 0.2, 0.1]], requires_grad=True)

    def sims(v: torch.Tensor) -> tuple[float, float]:
        qn = F.normalize(v.detach(), dim=1)[0]
        return float(qn @ mem.keys[0]), float(qn @ mem.keys[1])

    p0, n0 = sims(q)
    loss = mem.triplet_loss(q, z_w)
    assert float(loss.detach()) == pytest.approx(n0 - p0 + 0.1, abs=1e-6)
    loss.backward()
    with torch.no_grad():
        q1 = q - 0.1 * q.grad
    p1, n1 = sims(q1)
    assert p1 > p0 and n1 < n0


def test_triplet_without_negative_is_zero_with_graph() -> None:
    mem = WaveletMemory(4, 4, 6)
    v = torch.ones(1, 6)
    _fill(mem, torch.ones(1, 4), v)
    q = torch.randn(2, 4, requires_grad=True)
    loss = mem.triplet_loss(q, v.expand(2, 6))  # only positives exist
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert q.grad is not None
    empty = WaveletMemory(4, 4, 6)
    assert float(empty.triplet_loss(q, v.expand(2, 6)).detach()) == 0.0
