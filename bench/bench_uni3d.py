"""Uni3D score speed: farthest point sampling of 512 centres from 10,000 points, and points per second through the
encoder (random weights of a released size; the speed does not depend on the values).

    python bench/bench_uni3d.py [--size tiny] [--device cpu] [--dtype fp32] [--batch 1] [--repeats 3] [--threads N]"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from headless.pack import load_pack  # noqa: E402


def best_of(repeats: int, run, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "base", "large", "giant"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = load_pack().geodream_ops
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    num_points = ops.uni3d.point_sampling.UNI3D_NUM_POINTS
    xyz = ops.uni3d.point_sampling.normalize_unit_sphere(torch.randn(num_points, 3))
    points = torch.cat([xyz[None].expand(args.batch, -1, -1), torch.rand(args.batch, num_points, 3)], dim=-1).to(device)
    config = ops.uni3d.encoder.SIZES[args.size]

    fps = best_of(args.repeats, lambda: ops.uni3d.point_groups.farthest_point_sample(points[..., :3], config.num_group),
                  device)
    model = ops.uni3d.encoder.Uni3D(config).to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        model.encode(points)  # warm-up
        encode = best_of(args.repeats, lambda: model.encode(points), device)
    params = sum(p.numel() for p in model.point_encoder.parameters()) / 1e6
    print(f"| {args.size} ({params:.0f}M) | {device.type} {torch.get_num_threads()} threads | {args.dtype} | "
          f"{args.batch} | {fps * 1000:.0f} ms | {encode * 1000:.0f} ms | {args.batch * num_points / encode:,.0f} |")


if __name__ == "__main__":
    main()
