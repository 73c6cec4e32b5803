"""Surface sampling of large meshes: 10,000 points drawn by area from F faces with torch.multinomial (the old
sampler, limited to 2^24 categories) and with the cumulative-area search (point_sampling.sample_faces), plus the
whole sample_surface on a flat grid mesh of F faces. Each size runs in a fresh process for its peak memory.

    python bench/bench_mesh_sampling.py [--faces 1048576 4194304 16777218] [--threads 1]"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headless.pack import load_pack  # noqa: E402

NUM_POINTS = 10_000


def grid_mesh(faces: int):
    """A flat strip of ``faces`` triangles (two per unit square), vertices [V, 3] and faces [F, 3]."""
    squares = (faces + 1) // 2
    x = torch.arange(squares + 1, dtype=torch.float32)
    vertices = torch.cat([torch.stack([x, torch.zeros_like(x), torch.zeros_like(x)], 1),
                          torch.stack([x, torch.ones_like(x), torch.zeros_like(x)], 1)])
    i = torch.arange(squares)
    lower = torch.stack([i, i + 1, i + squares + 2], 1)
    upper = torch.stack([i, i + squares + 2, i + squares + 1], 1)
    return vertices, torch.stack([lower, upper], 1).reshape(-1, 3)[:faces]


def measure(faces: int) -> dict:
    ops = load_pack().geodream_ops
    from importlib import import_module

    point_sampling = import_module(f"{ops.__name__}.uni3d.point_sampling")
    mesh_module = import_module(f"{ops.__name__}.mesh.textured_mesh")
    areas = torch.rand(faces, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    row = {"faces": faces}
    start = time.perf_counter()
    try:
        torch.multinomial(areas / areas.sum(), NUM_POINTS, replacement=True)
        row["multinomial_ms"] = round((time.perf_counter() - start) * 1000, 1)
    except RuntimeError as err:
        row["multinomial_ms"] = f"fails: {str(err).splitlines()[0]}"
    start = time.perf_counter()
    point_sampling.sample_faces(areas, NUM_POINTS, torch.Generator().manual_seed(0))
    row["search_ms"] = round((time.perf_counter() - start) * 1000, 1)
    del areas
    mesh = mesh_module.TexturedMesh(*grid_mesh(faces))
    start = time.perf_counter()
    xyz, _ = point_sampling.sample_surface(mesh, NUM_POINTS)
    row["sample_surface_s"] = round(time.perf_counter() - start, 2)
    row["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, nargs="+", default=[1 << 20, 1 << 22, (1 << 24) + 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.faces[0])))
        return
    print("| faces | torch.multinomial (ms) | cumulative search (ms) | sample_surface (s) | peak RSS (MB) |")
    print("|---:|---:|---:|---:|---:|")
    for faces in args.faces:
        out = subprocess.run([sys.executable, __file__, "--one", "--faces", str(faces), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {row['faces']:,} | {row['multinomial_ms']} | {row['search_ms']} | {row['sample_surface_s']} | "
              f"{row['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
