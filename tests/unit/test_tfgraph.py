"""Frozen TensorFlow graphs run with torch: the GraphDef reader, the interpreter and the compact
(.safetensors, int8) graph format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _graphdef import node_def, same_nodes, tiny_graphdef

from rmmvideo.errors import UserError
from rmmvideo.train.tfgraph import (
    FrozenGraphNet,
    GraphNode,
    load_graph,
    read_compact_graph,
    read_graph,
    save_compact_graph,
)


def test_interpreter_follows_tensorflow_semantics(tmp_path):
    """Conv SAME with stride 2 on an even size pads 0 before / 1 after (TensorFlow), NHWC concat,
    VALID max-pool, bias, relu, mul, add, reshape with a frozen batch of 1, matmul, batch norm."""
    rng = np.random.default_rng(0)
    graph, c = tiny_graphdef(rng)
    w1, b1, w2, wf = c["w1"], c["b1"], c["w2"], c["wf"]
    mean, var, beta, gamma = c["mean"], c["var"], c["beta"], c["gamma"]
    path = tmp_path / "g.pb"
    path.write_bytes(graph)
    nodes = read_graph(path)
    assert [n.name for n in nodes][:3] == ["x", "w1", "b1"]
    assert nodes[[n.name for n in nodes].index("conv1")].inputs == ["x", "w1"]
    net = FrozenGraphNet(nodes, "x", "bn")

    x = torch.from_numpy(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))  # NHWC, batch 2
    got = net(x)
    # reference, written out by hand in NCHW
    xc = x.permute(0, 3, 1, 2)
    y1 = F.relu(F.conv2d(F.pad(xc, (0, 1, 0, 1)), torch.from_numpy(w1).permute(3, 2, 0, 1), stride=2)
                + torch.from_numpy(b1)[None, :, None, None])
    y2 = F.conv2d(y1, torch.from_numpy(w2).permute(3, 2, 0, 1))
    cat = torch.cat([y1, y2, y1, y2], dim=1) * 1.5
    pooled = F.max_pool2d(cat, 2, 2).permute(0, 2, 3, 1).reshape(2, -1)  # flatten in NHWC order
    fc = pooled @ torch.from_numpy(wf)
    ref = (fc - torch.from_numpy(mean)) / torch.sqrt(torch.from_numpy(var) + 1e-3) * torch.from_numpy(gamma)
    ref = (ref + torch.from_numpy(beta)).reshape(2, 1, 1, 5)
    assert got.shape == (2, 1, 1, 5)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # intermediate nodes in the same pass (NHWC), for the feature term
    relu1, out = net.run(x, ["relu1", "bn"])
    torch.testing.assert_close(relu1, y1.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    assert torch.equal(out, got)
    with pytest.raises(ValueError, match="does not depend"):
        net.run(x, ["w1"])  # a constant, not a computed node


def test_unknown_op_is_refused(tmp_path):
    path = tmp_path / "g.pb"
    path.write_bytes(node_def("x", "Placeholder", []) + node_def("y", "Softmax", ["x"]))
    with pytest.raises(ValueError, match="Softmax"):
        FrozenGraphNet(read_graph(path), "x", "y")


# ---------------------------------------------------------------- compact (.safetensors) graphs
def test_compact_graph_round_trip_is_exact(tmp_path):
    """Without quantization (and for small constants with it) the compact file reproduces the graph."""
    rng = np.random.default_rng(0)
    graph, _ = tiny_graphdef(rng)
    (tmp_path / "g.pb").write_bytes(graph)
    nodes = read_graph(tmp_path / "g.pb")
    x = torch.from_numpy(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    ref = FrozenGraphNet(nodes, "x", "bn")(x)
    for quantize in (False, True):  # every constant here is under 4096 elements
        path = save_compact_graph(nodes, tmp_path / "out" / f"g{int(quantize)}.safetensors", quantize=quantize)
        back = read_compact_graph(path)
        same_nodes(nodes, back)
        for n, m in zip(nodes, back):
            if n.op == "Const":
                v, w = n.attrs["value"], m.attrs["value"]
                assert v.dtype == w.dtype and v.shape == w.shape and np.array_equal(v, w)
        assert torch.equal(FrozenGraphNet(back, "x", "bn")(x), ref)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["g0.safetensors", "g1.safetensors"]  # no temp files


def _quant_graph(rng: np.random.Generator) -> list[GraphNode]:
    """Conv (3x3x16x64 kernel, channel magnitudes over 4 decades, one all-zero) -> MatMul (256, 32)."""
    k = (rng.normal(size=(3, 3, 16, 64)) * 10.0 ** rng.uniform(-3, 1, size=64)).astype(np.float32)
    k[..., 5] = 0.0
    return [
        GraphNode("x", "Placeholder", attrs={"dtype": 1, "shape": None}),
        GraphNode("k", "Const", attrs={"value": k, "dtype": 1}),
        GraphNode("b", "Const", attrs={"value": rng.normal(size=(64,)).astype(np.float32), "dtype": 1}),
        GraphNode("flat", "Const", attrs={"value": np.array([1, 256], np.int32), "dtype": 3}),
        GraphNode("wf", "Const", attrs={"value": rng.normal(size=(256, 32)).astype(np.float32), "dtype": 1}),
        GraphNode("conv", "Conv2D", ["x", "k"], {"strides": [1, 1, 1, 1], "padding": "VALID", "data_format": "NHWC",
                                                 "dilations": [1, 1, 1, 1], "T": 1, "use_cudnn_on_gpu": 1}),
        GraphNode("bias", "BiasAdd", ["conv", "b"], {"T": 1}),
        GraphNode("relu", "Relu", ["bias"], {"T": 1}),
        GraphNode("reshape", "Reshape", ["relu", "flat"], {"T": 1, "Tshape": 3}),
        GraphNode("fc", "MatMul", ["reshape", "wf"], {"transpose_a": 0, "transpose_b": 0, "T": 1}),
    ]


def test_compact_graph_quantizes_large_kernels(tmp_path):
    """Kernels of >= 4096 elements become int8 with per-output-channel scales, within scale / 2."""
    from safetensors.numpy import load_file

    rng = np.random.default_rng(1)
    nodes = _quant_graph(rng)
    path = save_compact_graph(nodes, tmp_path / "q.safetensors")
    exact = save_compact_graph(nodes, tmp_path / "f.safetensors", quantize=False)
    assert path.stat().st_size < 0.4 * exact.stat().st_size
    stored = load_file(str(path))
    assert sorted(stored) == ["q:k", "q:wf", "s:k", "s:wf", "t:b", "t:flat"]
    assert stored["q:k"].dtype == np.int8 and stored["s:k"].shape == (64,)
    assert stored["q:wf"].dtype == np.int8 and stored["s:wf"].shape == (32,)
    back = read_compact_graph(path)
    same_nodes(nodes, back)
    orig = {n.name: n.attrs["value"] for n in nodes if n.op == "Const"}
    got = {n.name: n.attrs["value"] for n in back if n.op == "Const"}
    for name in ("k", "wf"):
        s = stored[f"s:{name}"]
        assert got[name].dtype == np.float32 and got[name].shape == orig[name].shape
        assert (np.abs(got[name] - orig[name]) <= 0.5 * s * (1 + 1e-5)).all()
        # per channel: the scale follows the channel's own magnitude
        amax = np.abs(orig[name]).reshape(-1, s.size).max(axis=0)
        np.testing.assert_allclose(s[amax > 0], amax[amax > 0] / 127, rtol=1e-6)
    assert stored["s:k"][5] == 1.0 and not got["k"][..., 5].any()  # the all-zero channel stays zero
    for name in ("b", "flat"):
        assert got[name].dtype == orig[name].dtype and np.array_equal(got[name], orig[name])
    x = torch.from_numpy(rng.normal(size=(3, 4, 4, 16)).astype(np.float32))
    ref, out = FrozenGraphNet(nodes, "x", "fc")(x), FrozenGraphNet(back, "x", "fc")(x)
    assert F.cosine_similarity(ref, out, dim=1).min() > 0.999


def test_compact_graph_bad_files(tmp_path):
    """Missing, garbage or foreign files are one-line UserErrors, for either suffix."""
    from safetensors.numpy import save_file

    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    (tmp_path / "junk.pb").write_bytes(b"\x0f" * 64)
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "other.safetensors"), metadata={"format": "pt"})
    cases = [
        (lambda: read_compact_graph(tmp_path / "missing.safetensors"), "not found"),
        (lambda: read_compact_graph(tmp_path / "junk.safetensors"), "cannot read"),
        (lambda: read_compact_graph(tmp_path / "other.safetensors"), "not a compact graph"),
        (lambda: load_graph(tmp_path / "missing.safetensors"), "not found"),
        (lambda: load_graph(tmp_path / "junk.safetensors"), "cannot read compact graph"),
        (lambda: load_graph(tmp_path / "missing.pb"), "not found"),
        (lambda: load_graph(tmp_path / "junk.pb"), "cannot read TensorFlow graph"),
    ]
    for call, match in cases:
        with pytest.raises(UserError, match=match) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="JSON"):
        save_compact_graph([GraphNode("x", "Placeholder", attrs={"t": np.zeros(2)})], tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_load_graph_reads_either_form(tmp_path):
    """``.safetensors``: the compact reader; any other suffix: the GraphDef reader."""
    graph, _ = tiny_graphdef(np.random.default_rng(0))
    (tmp_path / "g.pb").write_bytes(graph)
    nodes = read_graph(tmp_path / "g.pb")
    same_nodes(load_graph(tmp_path / "g.pb"), nodes)
    compact = save_compact_graph(nodes, tmp_path / "g.safetensors", quantize=False)
    same_nodes(load_graph(compact), nodes)
