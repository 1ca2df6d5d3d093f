"""CPU/GPU forward time of RMM configs: ms per face of `RMM.restore` (given noise and slots).

    python pipelines/bench_model.py [--configs configs/models/rmm-small.yaml configs/models/rmm-512.yaml]
        [--batch 8 1] [--threads 2] [--device cpu] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    # Idle OpenMP threads sleep instead of spinning (before torch loads: it is imported below)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from rmmvideo.config import ModelConfig
    from rmmvideo.models.rmm import RMM

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["configs/models/rmm-small.yaml", "configs/models/rmm-512.yaml"])
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for path, b in zip(args.configs, args.batch):
        cfg = ModelConfig.from_yaml(path)
        torch.manual_seed(0)
        model = RMM(cfg).eval().to(args.device)
        x = torch.rand(b, 3, cfg.size, cfg.size, device=args.device)
        noise = torch.randn(b, cfg.z_n_dim, device=args.device)
        slots = torch.full((b,), -1, dtype=torch.long, device=args.device)
        model.restore(x, noise, slots)  # warm-up
        times = []
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.restore(x, noise, slots)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        best = min(times)
        params = model.parameter_counts()["total"]
        print(f"{cfg.name}: {params:,} parameters, batch {b}, {args.threads} threads, {args.device}: "
              f"best {best * 1000:.1f} ms per batch, {best * 1000 / b:.1f} ms per face "
              f"(median {sorted(times)[len(times) // 2] * 1000 / b:.1f})")


if __name__ == "__main__":
    main()
