"""Run a frozen TensorFlow graph with torch: GraphDef reader, interpreter and a compact int8 file format.

Nothing here imports TensorFlow or protobuf, and nothing is specific to one network:

- :func:`read_graph` parses a frozen ``GraphDef`` (``.pb``) with a small protobuf wire-format reader
  -> list of :class:`GraphNode` (name, op, inputs, attributes; a ``Const``'s ``value`` an array);
- :class:`FrozenGraphNet` executes the nodes in order with torch ops (NHWC, as TensorFlow), so the
  graph is differentiable; the op types in ``FrozenGraphNet.OPS``, anything else is an error;
- :func:`save_compact_graph` / :func:`read_compact_graph` store a graph as one ``.safetensors``
  file: nodes as JSON metadata, constants as tensors, large float kernels as int8 with one
  float32 scale per output channel (about a quarter of the float32 size);
- :func:`load_graph` reads either form by suffix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rmmvideo.errors import UserError
from rmmvideo.video.safe_output import atomic_output

# TensorFlow DataType enum -> numpy dtype (the types a frozen float graph uses).
_DTYPES: dict[int, Any] = {1: np.float32, 3: np.int32, 9: np.int64}

# Compact graph files (.safetensors): format marker, and which constants become int8.
COMPACT_FORMAT = "1"
_COMPACT_MARKER = "rmmvideo_graph"
_QUANTIZE_MIN_SIZE = 4096


# ---------------------------------------------------------------- protobuf wire format
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a serialized protobuf message."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i : i + size], i + size
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield num, wire, value


def _signed(v: int) -> int:
    """A varint read as int64 (negative numbers are sent as their 64-bit two's complement)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(buf: bytes) -> list[int]:
    out, i = [], 0
    while i < len(buf):
        v, i = _varint(buf, i)
        out.append(_signed(v))
    return out


def _tensor(buf: bytes) -> np.ndarray:
    """TensorProto -> array (dtype 1, shape 2, tensor_content 4, float_val 5, int_val 7, int64_val 10)."""
    dtype, shape, content = None, [], None
    scalars: list[float | int] = []
    for num, wire, value in _fields(buf):
        if num == 1:
            dtype = value
        elif num == 2:
            for dnum, _, dim in _fields(value):
                if dnum == 2:
                    shape.append(_signed({k: v for k, _, v in _fields(dim)}.get(1, 0)))
        elif num == 4:
            content = value
        elif num == 5:
            scalars.extend(np.frombuffer(value, "<f4").tolist() if wire == 2 else [np.frombuffer(value, "<f4")[0]])
        elif num in (7, 10):
            scalars.extend(_packed_varints(value) if wire == 2 else [value])
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype}")
    np_dtype = _DTYPES[dtype]
    count = int(np.prod(shape)) if shape else 1
    if content is not None:
        arr = np.frombuffer(content, np.dtype(np_dtype).newbyteorder("<")).astype(np_dtype)
    else:
        arr = np.asarray(scalars, dtype=np_dtype)
        if arr.size == 1 and count > 1:
            arr = np.full(count, arr[0], dtype=np_dtype)  # TF stores splats as one value
    return arr.reshape(shape)


def _attr(buf: bytes) -> Any:
    """AttrValue -> python value (list 1, s 2, i 3, f 4, b 5, type 6, tensor 8)."""
    for num, wire, value in _fields(buf):
        if num == 1:
            items: list[Any] = []
            for lnum, lwire, lval in _fields(value):
                if lnum == 2:
                    items.append(bytes(lval).decode())
                elif lnum == 3:
                    items.extend(_packed_varints(lval) if lwire == 2 else [lval])
            return items
        if num == 2:
            return bytes(value).decode()
        if num == 3:
            return _signed(value)
        if num == 4:
            return float(np.frombuffer(value, "<f4")[0])
        if num in (5, 6):
            return value
        if num == 8:
            return _tensor(value)
    return None


@dataclass
class GraphNode:
    """One NodeDef: ``inputs`` without the ``:0`` suffix; control inputs (``^x``) dropped."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)


def read_graph(path: str | Path) -> list[GraphNode]:
    """Nodes of a frozen TensorFlow GraphDef file, in file order."""
    nodes = []
    for num, _, value in _fields(Path(path).read_bytes()):
        if num != 1:
            continue
        node = GraphNode(name="", op="")
        for fnum, _, fval in _fields(value):
            if fnum == 1:
                node.name = bytes(fval).decode()
            elif fnum == 2:
                node.op = bytes(fval).decode()
            elif fnum == 3:
                inp = bytes(fval).decode()
                if not inp.startswith("^"):
                    node.inputs.append(inp.split(":")[0])
            elif fnum == 5:
                key, val = "", b""
                for anum, _, aval in _fields(fval):
                    if anum == 1:
                        key = bytes(aval).decode()
                    elif anum == 2:
                        val = aval
                node.attrs[key] = _attr(val)
        nodes.append(node)
    return nodes


# ---------------------------------------------------------------- compact graph files
def one_line_error(e: BaseException) -> str:
    """``Type: message`` on one line (for wrapping a parser's exception in a UserError)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per last-axis channel: ``w ~ q * s``, ``|error| <= s / 2``."""
    w64 = w.astype(np.float64)
    amax = np.abs(w64).reshape(-1, w.shape[-1]).max(axis=0)
    s = (amax / 127.0).astype(np.float32)
    s[s == 0] = 1.0  # an all-zero channel (or one too small for a float32 scale)
    q = np.clip(np.rint(w64 / s.astype(np.float64)), -127, 127).astype(np.int8)
    return q, s


def _dequantize(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    return q.astype(np.float32) * s.astype(np.float32)


def save_compact_graph(nodes: list[GraphNode], path: str | Path, quantize: bool = True) -> Path:
    """Write a graph as one ``.safetensors`` file that :func:`read_compact_graph` reads back.

    Metadata ``graph``: JSON list of the nodes (name, op, inputs, attributes; a Const's ``value``
    left out); ``rmmvideo_graph``: the format version. Each Const's value is the tensor
    ``t:<name>``, stored exactly (float32, int32 or int64). With ``quantize``, finite float32
    constants of at least 2 dimensions and 4096 elements (convolution kernels HWIO, MatMul weights
    ``(in, out)``) are stored instead as int8 ``q:<name>`` with float32 scales ``s:<name>``, one
    per last-axis (output) channel. Written to a temporary file in the same folder and renamed.

    Raises:
        ValueError: a Const without an array value, an unsupported dtype, a duplicate name, or an
            attribute that JSON cannot hold.
    """
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    graph: list[dict[str, Any]] = []
    for n in nodes:
        attrs = dict(n.attrs)
        if n.op == "Const":
            value = attrs.pop("value", None)
            if not isinstance(value, np.ndarray):
                raise ValueError(f"Const {n.name} has no array value")
            if value.dtype.type not in (np.float32, np.int32, np.int64):
                raise ValueError(f"Const {n.name}: unsupported dtype {value.dtype}")
            if f"t:{n.name}" in tensors or f"q:{n.name}" in tensors:
                raise ValueError(f"duplicate Const name {n.name}")
            if (quantize and value.dtype == np.float32 and value.ndim >= 2
                    and value.size >= _QUANTIZE_MIN_SIZE and np.isfinite(value).all()):
                tensors[f"q:{n.name}"], tensors[f"s:{n.name}"] = _quantize(value)
            else:
                tensors[f"t:{n.name}"] = np.require(value, dtype=value.dtype.type, requirements="C")  # native, keeps 0-d
        graph.append({"name": n.name, "op": n.op, "inputs": list(n.inputs), "attrs": attrs})
    try:
        meta = {_COMPACT_MARKER: COMPACT_FORMAT, "graph": json.dumps(graph, separators=(",", ":"))}
    except TypeError as e:
        raise ValueError(f"graph attributes are not JSON-serialisable: {e}") from e
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return p


def read_compact_graph(path: str | Path) -> list[GraphNode]:
    """Nodes of a file from :func:`save_compact_graph`, in order; int8 constants dequantized to float32.

    Raises:
        UserError: missing file, not a safetensors file, no ``rmmvideo_graph`` marker, or a
            corrupt graph (bad JSON, a missing tensor).
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"graph file not found: {p}")
    try:
        with safe_open(str(p), framework="np") as f:
            meta = f.metadata() or {}
            if meta.get(_COMPACT_MARKER) != COMPACT_FORMAT:
                raise UserError(f"{p} is not a compact graph file (no {_COMPACT_MARKER}={COMPACT_FORMAT} metadata)")
            keys = set(f.keys())
            nodes = []
            for d in json.loads(meta["graph"]):
                node = GraphNode(name=d["name"], op=d["op"], inputs=list(d["inputs"]), attrs=dict(d["attrs"]))
                if node.op == "Const":
                    if f"q:{node.name}" in keys:
                        node.attrs["value"] = _dequantize(f.get_tensor(f"q:{node.name}"), f.get_tensor(f"s:{node.name}"))
                    else:
                        node.attrs["value"] = f.get_tensor(f"t:{node.name}")
                nodes.append(node)
    except UserError:
        raise
    except Exception as e:  # any failure to parse the file is the file's fault
        raise UserError(f"cannot read compact graph {p}: {one_line_error(e)}") from e
    return nodes


def load_graph(path: str | Path) -> list[GraphNode]:
    """Nodes of a compact ``.safetensors`` graph or, for any other suffix, a frozen GraphDef.

    Raises:
        UserError: the file is missing or cannot be parsed.
    """
    p = Path(path)
    if p.suffix == ".safetensors":
        return read_compact_graph(p)
    if not p.is_file():
        raise UserError(f"graph file not found: {p}")
    try:
        return read_graph(p)
    except Exception as e:  # a malformed protobuf fails in many ways
        raise UserError(f"cannot read TensorFlow graph {p}: {one_line_error(e)}") from e


# ---------------------------------------------------------------- interpreter
def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad_nchw(x: torch.Tensor, k: tuple[int, int], s: tuple[int, int], padding: str, value: float = 0.0) -> torch.Tensor:
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise ValueError(f"unsupported padding {padding}")
    top, bottom = _same_pad(x.shape[2], k[0], s[0])
    left, right = _same_pad(x.shape[3], k[1], s[1])
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


def _check_nhwc(node: GraphNode) -> None:
    fmt = node.attrs.get("data_format", "NHWC")
    if fmt != "NHWC":
        raise ValueError(f"{node.name}: data_format {fmt} is not supported")


class FrozenGraphNet(nn.Module):
    """Runs a frozen TensorFlow graph of convolutional ops with torch (differentiable).

    Tensors flow as TensorFlow's NHWC; convolutions and pools permute to NCHW around the torch
    call. Constants become buffers (convolution kernels already as ``(O, I, kh, kw)``).

    Args:
        nodes: from :func:`read_graph`.
        input_name / output_name: the placeholder fed and the node returned.
    """

    OPS = frozenset((
        "Const", "Placeholder", "Identity", "Conv2D", "BiasAdd", "Relu", "ConcatV2", "Mul", "Add",
        "MaxPool", "AvgPool", "Reshape", "MatMul", "FusedBatchNorm", "Square", "Sum", "Maximum", "Rsqrt",
    ))

    def __init__(self, nodes: list[GraphNode], input_name: str, output_name: str) -> None:
        super().__init__()
        by_name = {n.name: n for n in nodes}
        if input_name not in by_name or output_name not in by_name:
            raise ValueError(f"graph has no node {input_name!r} or {output_name!r}")
        unknown = sorted({n.op for n in nodes} - self.OPS)
        if unknown:
            raise ValueError(f"unsupported TensorFlow ops: {unknown}")
        conv_kernels = {n.inputs[1] for n in nodes if n.op == "Conv2D"}
        self.input_name, self.output_name = input_name, output_name
        self._keys: dict[str, str] = {}
        for n in nodes:
            if n.op != "Const":
                continue
            arr = np.asarray(n.attrs["value"])
            t = torch.from_numpy(arr.copy())
            if n.name in conv_kernels:
                t = t.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
            key = f"c{len(self._keys)}"
            self._keys[n.name] = key
            self.register_buffer(key, t, persistent=False)
        self.nodes = self._needed(by_name, output_name)
        self._computed = {n.name for n in self.nodes}

    @staticmethod
    def _needed(by_name: dict[str, GraphNode], output: str) -> list[GraphNode]:
        """Non-constant nodes the output depends on, in a topological order."""
        order: list[GraphNode] = []
        seen: set[str] = set()
        stack: list[tuple[str, bool]] = [(output, False)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(by_name[name])
                continue
            if name in seen:
                continue
            seen.add(name)
            stack.append((name, True))
            stack.extend((i, False) for i in by_name[name].inputs if i not in seen)
        return [n for n in order if n.op != "Const"]

    def const(self, name: str) -> torch.Tensor:
        return getattr(self, self._keys[name])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: the input placeholder's value (NHWC for image graphs). Returns the output node."""
        return self.run(x, [self.output_name])[0]

    def run(self, x: torch.Tensor, outputs: Sequence[str]) -> list[torch.Tensor]:
        """The values of the nodes ``outputs`` (each one the output node or a node it depends on)."""
        missing = [o for o in outputs if o not in self._computed]
        if missing:
            raise ValueError(f"the graph's output does not depend on {missing}")
        env: dict[str, torch.Tensor] = {self.input_name: x}

        def val(name: str) -> torch.Tensor:
            return env[name] if name in env else self.const(name)

        for n in self.nodes:
            if n.name == self.input_name:
                continue
            env[n.name] = self._run(n, [val(i) for i in n.inputs])
        return [env[o] for o in outputs]

    def _run(self, n: GraphNode, a: list[torch.Tensor]) -> torch.Tensor:
        op = n.op
        if op == "Identity":
            return a[0]
        if op == "Conv2D":
            _check_nhwc(n)
            s = n.attrs["strides"][1:3]
            d = n.attrs.get("dilations", [1, 1, 1, 1])[1:3]
            w = a[1]
            x = a[0].permute(0, 3, 1, 2)
            k = (d[0] * (w.shape[2] - 1) + 1, d[1] * (w.shape[3] - 1) + 1)
            x = _pad_nchw(x, k, (s[0], s[1]), n.attrs["padding"])
            return F.conv2d(x, w, stride=tuple(s), dilation=tuple(d)).permute(0, 2, 3, 1)
        if op in ("MaxPool", "AvgPool"):
            _check_nhwc(n)
            k, s = n.attrs["ksize"][1:3], n.attrs["strides"][1:3]
            x = a[0].permute(0, 3, 1, 2)
            if op == "MaxPool":
                x = _pad_nchw(x, (k[0], k[1]), (s[0], s[1]), n.attrs["padding"], value=-math.inf)
                y = F.max_pool2d(x, tuple(k), tuple(s))
            else:
                if n.attrs["padding"] != "VALID":
                    raise ValueError(f"{n.name}: only VALID average pooling is supported")
                y = F.avg_pool2d(x, tuple(k), tuple(s))
            return y.permute(0, 2, 3, 1)
        if op == "BiasAdd":
            return a[0] + a[1]
        if op == "Relu":
            return F.relu(a[0])
        if op == "ConcatV2":
            return torch.cat(a[:-1], dim=int(a[-1]))
        if op == "Mul":
            return a[0] * a[1]
        if op == "Add":
            return a[0] + a[1]
        if op == "Maximum":
            return torch.maximum(a[0], a[1].to(a[0].dtype))
        if op == "Square":
            return a[0] * a[0]
        if op == "Rsqrt":
            return torch.rsqrt(a[0])
        if op == "Sum":
            dims = [int(v) for v in a[1].reshape(-1).tolist()]
            return a[0].sum(dim=dims, keepdim=bool(n.attrs.get("keep_dims", 0)))
        if op == "Reshape":
            shape = [int(v) for v in a[1].reshape(-1).tolist()]
            if len(shape) > 1:
                shape[0] = a[0].shape[0]  # the graph was frozen with batch 1; dim 0 is the batch
            return a[0].reshape(shape)
        if op == "MatMul":
            x, w = a
            x = x.transpose(-1, -2) if n.attrs.get("transpose_a", 0) else x
            w = w.transpose(-1, -2) if n.attrs.get("transpose_b", 0) else w
            return x @ w
        if op == "FusedBatchNorm":
            _check_nhwc(n)
            x, scale, offset, mean, var = a
            return (x - mean) * torch.rsqrt(var + float(n.attrs.get("epsilon", 1e-3))) * scale + offset
        raise ValueError(f"unsupported op {op}")
