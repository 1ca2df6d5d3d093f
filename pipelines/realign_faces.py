"""Re-align a folder of face crops the way the video pipeline aligns faces.

    python pipelines/realign_faces.py ../shared/data/faces/utkface runs/utk-dlib \
        [--weights rmmvideo/weights/rmm-small.safetensors] [--limit 12000] [--val 256]

The pipeline crops each face with the similarity that maps its five points (MTCNN + dlib's 68
points, :func:`rmmvideo.video.align.five_points`) onto the model's template. UTKFace's own
crops differ from that alignment per face by scale (std 3.9 %), rotation (1.6 degrees) and
shift (3.8 px at 200 px; 40 faces), so a model trained on them meets differently aligned faces
in video; on held-out faces a misalignment of that size cuts the detail's PSNR gain by more
than half and turns its identity gain into a loss (README, "Small faces, alignment and the
release gate"). This writes each image again,
same name and size (JPEG at quality 97), warped (Lanczos, mirrored borders) so that the detector's points land on
the template. Faces the detector misses are left out (the pipeline would not restore them).
``--limit`` keeps the first N training-split files, ``--val`` the first N validation-split ones
(the split is by file name, so it is the source folder's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="folder of face crops (e.g. ../shared/data/faces/utkface)")
    p.add_argument("dst", help="output folder (created; never the source)")
    p.add_argument("--weights", default=None, help="weights whose template to align to (default: bundled)")
    p.add_argument("--limit", type=int, default=None, help="training-split files to write (default: all)")
    p.add_argument("--val", type=int, default=256, help="validation-split files to write")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--pad", type=float, default=0.5, help="edge padding for the detector, in image sides")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from rmmvideo.config import ModelConfig
    from rmmvideo.models.weights import read_metadata
    from rmmvideo.train.data import list_images, split_of
    from rmmvideo.video.align import align_matrices
    from rmmvideo.video.detect import largest_face_points5, make_detector

    src, dst = Path(args.src).resolve(), Path(args.dst).resolve()
    if not src.is_dir():
        print(f"error: {src} is not a folder", file=sys.stderr)
        return 2
    if dst == src or src in dst.parents:
        print("error: the output folder must not be the source folder or inside it", file=sys.stderr)
        return 2
    cfg = ModelConfig.from_dict(read_metadata(args.weights)["rmm_config"])  # None: the bundled file
    detector, _ = make_detector("mtcnn")
    left = {"train": args.limit if args.limit is not None else 10**12, "val": args.val}
    written = missed = 0
    for path in list_images(src):
        rel = path.relative_to(src)
        part = split_of(str(rel), args.val_fraction)
        if left[part] <= 0:
            continue
        img = np.asarray(Image.open(path).convert("RGB"))
        w = img.shape[1]
        pts = largest_face_points5(detector, img, args.pad)
        if pts is None:
            missed += 1
            continue
        m = align_matrices(torch.as_tensor(pts, dtype=torch.float64)[None], cfg.template, w)[0].numpy()
        out = cv2.warpAffine(img, m, (w, w), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101)
        target = dst / rel  # the same name: the train/val split is by name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")  # not an image name: never listed
        Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).save(tmp, format="JPEG", quality=97)
        tmp.replace(target)
        left[part] -= 1
        written += 1
        if written % 1000 == 0:
            print(f"{written} written, {missed} without a face", flush=True)
    print(f"{written} faces written to {dst}, {missed} without a face")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
