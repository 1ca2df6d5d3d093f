"""Pack a seeded subset of a face folder at the model's crop size, to carry training data to a
machine with a transfer limit (the lent GPU box takes 64 MiB per call).

Faces are centre-cropped and resized exactly as ``FaceFolderDataset`` does (bicubic to
``--size``), then stored as JPEG (``--quality``, 4:2:0) under their original relative names, so
``split_of`` puts each one in the same split as in the source folder. Training faces are drawn
in a seeded random order until ``--max-mb`` is reached; the first ``--val`` validation faces are
added for the trainer's sample grids (training never reads them).

Usage:
    python pipelines/pack_faces.py ../shared/data/faces/utkface .gpu/faces128 --max-mb 30
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from rmmvideo.errors import UserError
from rmmvideo.train.data import center_square_resize, list_images, load_rgb, split_of
from rmmvideo.video.safe_output import atomic_output


def jpeg_bytes(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pack(
    src: Path, dst: Path, size: int, max_bytes: int, quality: int, val: int, val_fraction: float, seed: int
) -> dict[str, object]:
    """Write the packed folder ``dst`` (must not exist yet). Returns a summary dict."""
    if dst.exists():
        raise UserError(f"{dst} already exists: pick a new folder")
    root = src.resolve()
    rel = [p.relative_to(root).as_posix() for p in list_images(root)]
    train = [r for r in rel if split_of(r, val_fraction) == "train"]
    vals = [r for r in rel if split_of(r, val_fraction) == "val"][:val]
    order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
    dst.parent.mkdir(parents=True, exist_ok=True)
    total, n_train = 0, 0
    with atomic_output(dst, directory=True) as tmp:  # the folder appears whole or not at all
        tmp.mkdir()
        for i, name in enumerate(vals + order):
            data = jpeg_bytes(center_square_resize(load_rgb(root / name), size), quality)
            if i >= len(vals) and total + len(data) > max_bytes:
                break
            out = tmp / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
            total += len(data)
            n_train += i >= len(vals)
    summary = {
        "source": str(src), "size": size, "quality": quality, "seed": seed, "val_fraction": val_fraction,
        "train_faces": n_train, "train_available": len(train), "val_faces": len(vals), "bytes": total,
    }
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path, help="face folder (e.g. ../shared/data/faces/utkface)")
    ap.add_argument("dst", type=Path, help="new folder to write")
    ap.add_argument("--size", type=int, default=128, help="crop side (the model's size)")
    ap.add_argument("--max-mb", type=float, default=30.0, help="stop adding training faces at this size (MB)")
    ap.add_argument("--quality", type=int, default=95, help="JPEG quality")
    ap.add_argument("--val", type=int, default=4, help="validation faces to include (sample grids)")
    ap.add_argument("--val-fraction", type=float, default=0.05, help="the train config's val_fraction")
    ap.add_argument("--seed", type=int, default=0, help="order in which training faces are drawn")
    a = ap.parse_args(argv)
    try:
        s = pack(a.src, a.dst, a.size, int(a.max_mb * 1e6), a.quality, a.val, a.val_fraction, a.seed)
    except UserError as e:
        print(f"pack_faces: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
