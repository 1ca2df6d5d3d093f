"""Shared by the tfgraph and identity tests: a tiny TensorFlow GraphDef writer (protobuf wire
format by hand, no TensorFlow) and a node-list comparison."""

from __future__ import annotations

import struct

import numpy as np

from rmmvideo.train.tfgraph import GraphNode


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


def node_def(name: str, op: str, inputs: list[str], **attrs: bytes) -> bytes:
    """A serialized NodeDef as a GraphDef ``node`` field (GraphDef = the concatenation of these)."""
    body = _ld(1, name.encode()) + _ld(2, op.encode())
    body += b"".join(_ld(3, i.encode()) for i in inputs)
    body += b"".join(_ld(5, _ld(1, k.encode()) + _ld(2, v)) for k, v in attrs.items())
    return _ld(1, body)


def _const(name: str, arr: np.ndarray) -> bytes:
    return node_def(name, "Const", [], value=_ld(8, _tensor(arr)), dtype=_vi(6, 1))


def tiny_graphdef(rng: np.random.Generator) -> tuple[bytes, dict[str, np.ndarray]]:
    """A GraphDef ``x (B, 8, 8, 3) -> bn (B, 1, 1, 5)`` with every op kind, and its float constants."""
    w1 = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)  # HWIO
    b1 = rng.normal(size=(4,)).astype(np.float32)
    w2 = rng.normal(size=(1, 1, 4, 2)).astype(np.float32)
    wf = rng.normal(size=(12 * 2 * 2, 5)).astype(np.float32)
    mean, var = rng.normal(size=(5,)).astype(np.float32), rng.uniform(0.5, 2, size=(5,)).astype(np.float32)
    beta, gamma = rng.normal(size=(5,)).astype(np.float32), rng.uniform(0.5, 2, size=(5,)).astype(np.float32)
    graph = b"".join([
        node_def("x", "Placeholder", [], dtype=_vi(6, 1)),
        _const("w1", w1), _const("b1", b1), _const("w2", w2), _const("wf", wf),
        _const("half", np.array(0.5, np.float32)), _const("axis", np.array(3, np.int32)),
        _const("flat", np.array([1, -1], np.int32)), _const("to4", np.array([-1, 1, 1, 5], np.int32)),
        _const("mean", mean), _const("var", var), _const("beta", beta), _const("gamma", gamma),
        node_def("conv1", "Conv2D", ["x:0", "w1"], strides=_ints([1, 2, 2, 1]), padding=_ld(2, b"SAME")),
        node_def("bias1", "BiasAdd", ["conv1", "b1"]),
        node_def("relu1", "Relu", ["bias1"]),
        node_def("conv2", "Conv2D", ["relu1", "w2"], strides=_ints([1, 1, 1, 1]), padding=_ld(2, b"VALID")),
        node_def("cat", "ConcatV2", ["relu1", "conv2", "relu1", "conv2", "axis"]),
        node_def("scaled", "Mul", ["half", "cat"]),
        node_def("res", "Add", ["cat", "scaled"]),
        node_def("pool", "MaxPool", ["res"], ksize=_ints([1, 2, 2, 1]), strides=_ints([1, 2, 2, 1]),
                 padding=_ld(2, b"VALID")),
        node_def("flatten", "Reshape", ["pool", "flat"]),
        node_def("fc", "MatMul", ["flatten", "wf"]),
        node_def("fc4", "Reshape", ["fc", "to4"]),
        node_def("bn", "FusedBatchNorm", ["fc4", "gamma", "beta", "mean", "var"], epsilon=_ld(4, struct.pack("<f", 1e-3))),
    ])
    return graph, {"w1": w1, "b1": b1, "w2": w2, "wf": wf, "mean": mean, "var": var, "beta": beta, "gamma": gamma}



def same_nodes(a: list[GraphNode], b: list[GraphNode]) -> None:
    """Assert equal names, ops, inputs and attributes (a Const's ``value`` only present in both)."""
    assert [(n.name, n.op, n.inputs) for n in a] == [(n.name, n.op, n.inputs) for n in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.attrs.items() if k != "value"} == {k: v for k, v in y.attrs.items() if k != "value"}
        assert ("value" in x.attrs) == ("value" in y.attrs)

