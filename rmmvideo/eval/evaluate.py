"""Evaluate face restoration on a folder of high-quality faces under the paper's test protocols.

For every face: the HQ reference is the face resized to the model size S (aligned to the
template first when asked); it is degraded with a fixed per-face seed (``(seed, crc32(name))``)
by the chosen protocol, the LQ image is bicubic-resized back to S, and both the model's
restoration and that bicubic image are scored against the reference with the same metrics:

- "tb":  the paper's -TB protocol (blur + noise + JPEG) with the downsampling fixed to ``scale``;
- "mild": realistic mild degradation at ``scale``: Gaussian blur σ 0-1.5 (at S), downsampling,
  then noise σ 1-8 and JPEG 50-90 at the low resolution (``DegradationConfig.mild``);
- "video": blur σ 0-1.5, downsampling by ``scale``, noise σ 1-4, then H.264 (CRF 23-35) on a
  3-frame clip with sub-pixel shifts, 4:2:0 (``DegradationConfig.video``);
- "td4", "td8", "td16": plain bicubic downsampling by 4, 8, 16 (-TD).

Metrics (``rmmvideo.eval.metrics`` / ``face_metrics``): PSNR (RGB, capped at 100 dB), SSIM,
MS-SSIM (RGB), Hist-CIEDE against the ground truth and against the LQ input (the paper's
Table 5 compares with the LQ image), FED and LLE (dlib; LLE in pixels at S x S). LPIPS, FID, KID
and NIQE need network weights or model statistics that are not available locally: they are
reported as skipped.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from rmmvideo.errors import UserError
from rmmvideo.eval import metrics as M
from rmmvideo.train.degrade import (
    DegradationConfig,
    apply_params,
    downsample,
    resize_to,
    sample_params,
)

if TYPE_CHECKING:
    from rmmvideo.models.rmm import RMM

PROTOCOLS = ("tb", "mild", "video", "td4", "td8", "td16")
_AT_SCALE = {"tb": DegradationConfig.tb, "mild": DegradationConfig.mild, "video": DegradationConfig.video}
RestoreFn = Callable[[Tensor], Tensor]
"""``x_lq (B, 3, S, S)`` in [0, 1] (LQ resized back to S) -> ``x_hr (B, 3, S, S)`` in [0, 1]."""

# metric -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "psnr": ("PSNR (dB)", True),
    "ssim": ("SSIM", True),
    "ms_ssim": ("MS-SSIM", True),
    "hist_ciede": ("Hist-CIEDE vs GT", False),
    "hist_ciede_lq": ("Hist-CIEDE vs LQ", False),
    "fed": ("FED", False),
    "lle": ("LLE (px)", False),
}
SKIPPED = {
    "lpips": "skipped: no local weights",
    "fid": "skipped: no local weights (Inception)",
    "kid": "skipped: no local weights (Inception)",
    "niqe": "skipped: no local weights (NIQE natural-scene statistics)",
}


class FaceSource(Protocol):
    """What the evaluator reads: names and HQ faces at ``size`` (e.g. ``FaceFolderDataset``)."""

    size: int
    names: list[str]

    def __len__(self) -> int: ...

    def load_hq(self, index: int) -> Tensor: ...


def protocol_scale(protocol: str, scale: float) -> float:
    """Downsampling factor of a protocol (``scale`` for "tb", "mild" and "video")."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    return float(scale) if protocol in _AT_SCALE else float(protocol[2:])


def degrade_for_protocol(hq: Tensor, protocol: str, scale: float, rng: np.random.Generator) -> Tensor:
    """LQ image at low resolution ``(3, h, w)`` of ``hq`` ``(3, S, S)`` under ``protocol``."""
    r = protocol_scale(protocol, scale)
    if protocol in _AT_SCALE:
        return apply_params(hq, sample_params(rng, _AT_SCALE[protocol](r)))
    return downsample(hq, r)


def item_rng(seed: int, name: str) -> np.random.Generator:
    """The fixed degradation generator of one face."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])


@dataclass
class EvalReport:
    """Evaluation result. ``methods``: method -> metric -> mean over faces; ``per_image``: one
    dict per face (name and ``method/metric`` values); ``timing``: seconds per face."""

    protocol: str
    scale: float
    size: int
    seed: int
    n_images: int
    methods: dict[str, dict[str, float]]
    per_image: list[dict[str, float | str]]
    timing: dict[str, float]
    skipped: dict[str, str] = field(default_factory=lambda: dict(SKIPPED))
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        def clean(v: object) -> object:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        d = asdict(self)
        d["per_image"] = [{k: clean(v) for k, v in row.items()} for row in d["per_image"]]
        d["methods"] = {m: {k: clean(v) for k, v in row.items()} for m, row in d["methods"].items()}
        return json.dumps(d, indent=2)

    def to_markdown(self) -> str:
        keys = [k for k in METRICS if any(k in row for row in self.methods.values())]
        head = "| method | " + " | ".join(
            f"{METRICS[k][0]} {'↑' if METRICS[k][1] else '↓'}" for k in keys) + " |"
        lines = [
            f"### Protocol {self.protocol} (x{self.scale:g}), {self.n_images} faces at "
            f"{self.size}x{self.size}, seed {self.seed}",
            "",
            head,
            "|" + "---|" * (len(keys) + 1),
        ]
        for m, row in self.methods.items():
            cells = [_fmt(row.get(k, float("nan"))) for k in keys]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"- {k.upper()}: {v}" for k, v in self.skipped.items()]
        lines.append(
            "- time per face (s): " + ", ".join(f"{k} {v:.4f}" for k, v in self.timing.items())
        )
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4f}"


def _batches(n: int, bs: int) -> Iterable[range]:
    for i in range(0, n, bs):
        yield range(i, min(n, i + bs))


def evaluate(
    source: FaceSource,
    restore_fn: RestoreFn | None,
    protocol: str = "tb",
    scale: float = 4.0,
    seed: int = 0,
    batch_size: int = 8,
    face_metrics: bool = True,
    method_name: str = "rmm",
    progress: bool = False,
) -> EvalReport:
    """Score ``restore_fn`` and bicubic upsampling on every face of ``source``.

    Args:
        source: faces (``FaceFolderDataset`` or anything with ``size``, ``names``, ``load_hq``).
        restore_fn: ``(B, 3, S, S) -> (B, 3, S, S)`` in [0, 1]; None scores bicubic only.
        protocol: "tb", "mild", "video", "td4", "td8" or "td16"; ``scale``: the downsampling
            factor of "tb", "mild" and "video".
        seed: base of the per-face degradation seeds.
        face_metrics: compute FED / LLE (dlib, ~0.1-0.2 s per face and method on CPU).
    """
    r = protocol_scale(protocol, scale)
    n, s = len(source), int(source.size)
    if n == 0:
        raise UserError("no faces to evaluate")
    methods = ["bicubic"] + ([method_name] if restore_fn is not None else [])
    rows: list[dict[str, float | str]] = [{"name": source.names[i]} for i in range(n)]
    t = {"degrade": 0.0, "restore": 0.0, "metrics": 0.0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="face", desc=f"eval {protocol}")
    for idx in _batches(n, batch_size):
        t0 = time.perf_counter()
        hq = torch.stack([source.load_hq(i) for i in idx])
        if tuple(hq.shape[-2:]) != (s, s):
            raise UserError(f"faces are {tuple(hq.shape[-2:])}, expected ({s}, {s})")
        lq_small = [degrade_for_protocol(hq[j], protocol, r, item_rng(seed, source.names[i]))
                    for j, i in enumerate(idx)]
        x_lq = torch.stack([resize_to(x, s) for x in lq_small])
        t1 = time.perf_counter()
        outs = {"bicubic": x_lq}
        if restore_fn is not None:
            y = restore_fn(x_lq)
            if tuple(y.shape) != tuple(x_lq.shape):
                raise UserError(f"restore returned {tuple(y.shape)}, expected {tuple(x_lq.shape)}")
            outs[method_name] = y.detach().float().cpu().clamp(0, 1)
        t2 = time.perf_counter()
        refs = None
        if face_metrics:
            from rmmvideo.eval.face_metrics import (
                batch_fed_lle,
                face_reference,
                to_uint8,
            )

            refs = [face_reference(to_uint8(h)) for h in hq]
        for m, y in outs.items():
            vals = {
                "psnr": M.psnr(y, hq),
                "ssim": M.ssim(y, hq),
                "ms_ssim": M.ms_ssim(y, hq),
                "hist_ciede": M.hist_ciede(y, hq),
                "hist_ciede_lq": M.hist_ciede(y, x_lq),
            }
            if refs is not None:
                vals["fed"], vals["lle"] = batch_fed_lle(y, refs)
            for k, v in vals.items():
                for j, i in enumerate(idx):
                    rows[i][f"{m}/{k}"] = float(v[j])
        t3 = time.perf_counter()
        t["degrade"] += t1 - t0
        t["restore"] += t2 - t1
        t["metrics"] += t3 - t2
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    keys = [k for k in METRICS if k not in ("fed", "lle") or face_metrics]
    summary = {
        m: {k: float(np.mean([float(row[f"{m}/{k}"]) for row in rows])) for k in keys} for m in methods
    }
    notes = [
        "PSNR on RGB, capped at 100 dB; SSIM/MS-SSIM on RGB, 11 px Gaussian window σ 1.5; "
        f"MS-SSIM with {M.ms_ssim_levels(s)} scales at {s} px",
        "Hist-CIEDE: mean CIEDE2000 between 32 matched Lab quantile colours (0 = same colour "
        "distribution); 'vs LQ' compares with the bicubic LQ input as the paper's Table 5",
    ]
    if face_metrics:
        notes.append(f"FED: Euclidean distance of dlib 128-d descriptors; LLE: mean 68-landmark "
                     f"distance in px at {s}x{s}")
    timing = {k: v / n for k, v in t.items()}
    return EvalReport(protocol, r, s, seed, n, summary, rows, timing, notes=notes)


def model_restore_fn(model: RMM, device: str | torch.device = "cpu", seed: int = 0) -> RestoreFn:
    """Wrap an ``RMM`` (``model.restore(x, noise=...) -> .x_hr``) as a ``RestoreFn``: noise Z_N
    from a CPU generator seeded with ``seed``, so runs are reproducible for a given batch size."""
    gen = torch.Generator().manual_seed(int(seed))
    dim = int(model.config.z_n_dim)
    model.eval()

    def fn(x_lq: Tensor) -> Tensor:
        noise = torch.randn(x_lq.shape[0], dim, generator=gen)
        out = model.restore(x_lq.to(device), noise=noise.to(device))
        return out.x_hr.float().cpu()

    return fn


def format_table(reports: Sequence[EvalReport]) -> str:
    """Markdown of several reports (one section each)."""
    return "\n".join(r.to_markdown() for r in reports)
