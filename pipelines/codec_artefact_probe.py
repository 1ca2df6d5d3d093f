"""Train, export and probe the codec-artefact remover of ``--deblock`` (README, "Codec-artefact
removal"): how much it gains on real footage, without the rest of the pipeline.

The oracle of the model card says most of what the plain upscale loses on the shared clips is
codec error, present at the input's resolution. This trains a 7-layer residual CNN (48 channels,
~110k parameters, last layer zero so it starts as the identity) to undo H.264 on UTKFace training
faces (downscaled by U(1, 4), then ``codec_roundtrip_qp`` at CRF 12-40 on a 3-frame clip with
sub-pixel motion). Besides RGB it reads the codec's quantiser at each pixel (H.264 QP / 51, from
the decoder; -1, unknown, on 15 % of the patches), so it can tell a lightly coded face from a
heavily coded one. It is scored on real clips with ``eval-video``'s protocol: the degraded
clip's decoded frames go through the CNN (whole frames, all of its change), then the plain
bicubic upscale, against the plain upscale of the same frames. The pipeline keeps only the colour
of the change (``rmmvideo.video.deblock.Deblocker``; README, "Codec-artefact removal"):
``rmmvideo eval-video --deblock on --fuse 0`` scores that.

    python pipelines/codec_artefact_probe.py data --faces ../shared/data/faces/utkface --work W --pairs 4000
    python pipelines/codec_artefact_probe.py train --work W --seconds 2700     # resumes from W/ckpt.pt
    python pipelines/codec_artefact_probe.py eval --work W --scale 4 --crf 30 --frames 40 CLIP...
    python pipelines/codec_artefact_probe.py export --work W --out rmmvideo/weights/artefact-small.safetensors
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rmmvideo.models.artefact import UNKNOWN_QP, ArtefactCNN, ArtefactConfig, save_artefact
from rmmvideo.video.deblock import QP_WINDOW
from rmmvideo.video.quantiser import MAX_QP, QPMap


def make_pairs(faces: Path, work: Path, pairs: int, seed: int = 0) -> None:
    """(clean, H.264-decoded, per-macroblock QP) of training-split faces -> ``work/data.pt``:
    each face downscaled by U(1, 4), coded at CRF U{12..40}."""
    from rmmvideo.train.data import list_images, load_rgb, split_of, to_tensor
    from rmmvideo.train.degrade import codec_roundtrip_qp, downsample

    files = [p for p in list_images(faces) if split_of(p.relative_to(faces).as_posix(), 0.05) == "train"]
    rng = np.random.default_rng(seed)
    clean, lq, qp = [], [], []
    t0 = time.time()
    for n, i in enumerate(rng.choice(len(files), pairs, replace=False)):
        c = downsample(to_tensor(load_rgb(files[i])), float(rng.uniform(1.0, 4.0))).clamp(0, 1)
        if min(c.shape[-2:]) < 48:
            continue
        crf = int(rng.integers(12, 41))
        d, m = codec_roundtrip_qp(c, "h264", crf, frames=3, seed=int(rng.integers(1 << 30)))
        assert m is not None and m.block == (16.0, 16.0)
        clean.append((c * 255).round().byte())
        lq.append((d.clamp(0, 1) * 255).round().byte())
        qp.append(torch.from_numpy(m.values.astype(np.uint8)))
        if n % 500 == 0:
            print(f"{n} faces, {time.time() - t0:.0f}s", flush=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.save({"clean": clean, "lq": lq, "qp": qp}, work / "data.pt")
    print(f"{len(clean)} pairs -> {work / 'data.pt'}")


def train(work: Path, seconds: float, patch: int = 48, batch: int = 16, unknown: float = 0.15) -> None:
    """L1 on random patches (horizontal flips), Adam 2e-4, checkpoint every 200 steps. The QP
    channel is QP / 51 at each pixel, or unknown (-1) on a fraction ``unknown`` of the patches, so
    the model also works where the decoder gives no quantisers."""
    d = torch.load(work / "data.pt")
    clean, lq, qps = d["clean"], d["lq"], d["qp"]
    model = ArtefactCNN(ArtefactConfig(qp_input=True))
    opt = torch.optim.Adam(model.parameters(), 2e-4)
    ckpt, step = work / "ckpt.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = state["step"]
    rng = np.random.default_rng(step)
    t0, ratio = time.time(), 1.0
    while time.time() - t0 < seconds:
        xs, ys, qs = [], [], []
        for _ in range(batch):
            i = int(rng.integers(len(clean)))
            h, w = clean[i].shape[-2:]
            y0, x0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
            xs.append(lq[i][:, y0:y0 + patch, x0:x0 + patch])
            ys.append(clean[i][:, y0:y0 + patch, x0:x0 + patch])
            if rng.random() < unknown:
                qs.append(torch.full((1, patch, patch), UNKNOWN_QP))
            else:
                q = QPMap(qps[i].numpy().astype(np.float32), (16.0, 16.0))
                qs.append(torch.from_numpy(q.pixels(y0, y0 + patch, x0, x0 + patch))[None] / MAX_QP)
        x, y, q = torch.stack(xs).float() / 255, torch.stack(ys).float() / 255, torch.stack(qs)
        if rng.random() < 0.5:
            x, y, q = x.flip(-1), y.flip(-1), q.flip(-1)
        loss = F.l1_loss(model(x, q), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        ratio = 0.98 * ratio + 0.02 * loss.item() / max(F.l1_loss(x, y).item(), 1e-6)
        if step % 200 == 0:
            print(f"{step} {time.time() - t0:.0f}s L1 / input's L1 {ratio:.3f}", flush=True)
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)


def evaluate(work: Path, scale: int, crf: int, frames: int, clips: list[str], blind: bool = False,
             window: int = 0) -> None:
    """One line per clip: ΔPSNR, FED x (± SE), temporal x, sharpness x of the CNN + upscale
    against the plain upscale of the same decoded frames (eval-video's degradation and scores).
    ``blind``: the QP channel says unknown."""
    from rmmvideo.eval.video import (
        _decode,
        _relative,
        build_reference,
        crop_to_multiple,
        degrade_clip,
        score_method,
    )
    from rmmvideo.video.io import DecodedFrame, decode_frames, probe
    from rmmvideo.video.upscale import upscale_images

    model = ArtefactCNN(ArtefactConfig(qp_input=True))
    model.load_state_dict(torch.load(work / "ckpt.pt")["model"])
    model.eval()

    def qp_of(decoded: list[DecodedFrame], t: int) -> torch.Tensor | None:
        """QP / 51 of frame t, averaged over it and the ``window`` frames before it."""
        h, w = decoded[t].image.shape[:2]
        maps = [f.qp.pixels(0, h, 0, w) for f in decoded[max(0, t - window):t + 1] if f.qp is not None]
        if blind or not maps:
            return None
        return torch.from_numpy(np.mean(maps, 0) / MAX_QP)[None, None]

    for clip in map(Path, clips):
        hq_full, pts = _decode(clip, frames)
        hq = [np.ascontiguousarray(crop_to_multiple(f, 2 * scale)) for f in hq_full]
        lq_path = work / "lq.mp4"
        degrade_clip(hq, pts, probe(clip), lq_path, scale, crf)
        decoded = list(decode_frames(lq_path, quantisers=True))
        lq = [f.image for f in decoded]
        with torch.inference_mode():
            fixed = [(model(torch.from_numpy(f.image).permute(2, 0, 1)[None].float() / 255, qp_of(decoded, t))[0]
                      .clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for t, f in enumerate(decoded)]
        ref = build_reference(hq)
        plain = score_method("bicubic", [upscale_images(f, float(scale)) for f in lq], ref)
        got = score_method("cnn", [upscale_images(np.ascontiguousarray(f), float(scale)) for f in fixed], ref)
        _relative(got, plain)
        print(f"{clip.name} x{scale} CRF {crf}: {got.psnr_gain:+.3f} dB, FED {got.fed_ratio:.3f}x ±{got.fed_se:.3f}, "
              f"temporal {got.temporal_ratio:.3f}x, sharpness {got.sharpness / plain.sharpness:.3f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["data", "train", "eval", "export"])
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--faces", type=Path, default=Path("../shared/data/faces/utkface"))
    ap.add_argument("--pairs", type=int, default=4000)
    ap.add_argument("--seconds", type=float, default=2700)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--crf", type=int, default=30)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--qp-window", type=int, default=QP_WINDOW, help="eval: average each frame's QP with this many before it (as --deblock)")
    ap.add_argument("--blind", action="store_true", help="eval: the QP channel says unknown")
    ap.add_argument("--out", type=Path, default=None, help="export: the weights file to write")
    args = ap.parse_intermixed_args()
    torch.set_num_threads(args.threads)
    if args.command == "data":
        make_pairs(args.faces, args.work, args.pairs)
    elif args.command == "train":
        train(args.work, args.seconds)
    elif args.command == "eval":
        evaluate(args.work, args.scale, args.crf, args.frames, args.clips, args.blind, args.qp_window)
    else:
        state = torch.load(args.work / "ckpt.pt")
        model = ArtefactCNN(ArtefactConfig(qp_input=True))
        model.load_state_dict(state["model"])
        extra = {"steps": state["step"], "data": "UTKFace training split, downscaled by U(1, 4), H.264 CRF 12-40",
                 "input": "RGB + per-pixel H.264 QP / 51 (-1 unknown on 15% of patches)",
                 "loss": "L1, 48 px patches, batch 16, Adam 2e-4", "script": "pipelines/codec_artefact_probe.py"}
        print(save_artefact(model, args.out or args.work / "artefact.safetensors", extra))


if __name__ == "__main__":
    main()
