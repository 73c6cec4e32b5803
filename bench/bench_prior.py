"""Seconds and peak memory to build a cost volume at the released size (96^3 grid, 150^3 output, 256^2 views) on the
CPU, per sparse backend, and to mesh it. Each backend runs in a fresh process so its peak RSS is its own.

    python bench/bench_prior.py            # prints a markdown table; add --write to replace bench/RESULTS.md's section
Weights are random (a twin of the release's layout): time and memory depend on shapes and on the voxels the
cameras see, not on weight values."""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from stage_timing import write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## BuildCostVolume"


def run_one(backend: str, views: int, mesh_resolution: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import torch

    from geodream_pack.geodream_ops import cameras as C
    from geodream_pack.geodream_ops.multiview import view_recipe as V
    from geodream_pack.geodream_ops.prior.marching_cubes import extract_mesh, sdf_grid
    from geodream_pack.geodream_ops.prior.model import build_cost_volume
    from tests.twins_prior import random_prior

    model = random_prior(0)
    rig = C.mvdream_rig()
    if views == 14:  # the release's text recipe: 4 MVDream views + 10 Zero123++ v1.1 tiles at its pose table
        rig = V.expanded_cameras(V.release_source_cameras(rig), V.RELEASE_TILES)
    elif views > 4:  # 4 MVDream views and one Zero123++ v1.1 grid's views
        extra = C.zero123plus_rig("v1.1")
        rig = C.Cameras(torch.cat([rig.c2w, extra.c2w])[:views], torch.cat([rig.fovy_deg, extra.fovy_deg])[:views])
    images = torch.rand(len(rig), 256, 256, 3, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    volume = build_cost_volume(model, images, rig, 150, 96, backend=backend)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    grid = sdf_grid(volume, mesh_resolution)
    extract_mesh(volume, mesh_resolution, float(grid.median()))
    mesh_s = time.perf_counter() - start
    return {"backend": backend, "views": len(rig), "build_s": build_s, "mesh_s": mesh_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--views", type=int, default=14)
    parser.add_argument("--mesh-resolution", type=int, default=128)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.views, args.mesh_resolution)))
        return
    rows = []
    for backend in ("dense", "spconv"):
        out = subprocess.run([sys.executable, __file__, "--child", backend, "--views", str(args.views),
                              "--mesh-resolution", str(args.mesh_resolution)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    lines = [SECTION, "",
             f"CPU: {platform.processor() or platform.machine()}, {rows[0]['threads']} torch threads (shared machine); "
             f"{rows[0]['views']} views of 256^2 (14: the release's text recipe), 96^3 grid, output "
             "[1, 16, 150, 150, 150], batch statistics as the release. Random weights in the release's layout. "
             f"Load average {os.getloadavg()[0]:.1f} when written. `python bench/bench_prior.py --write`.", "",
             "| backend | build cost volume (s) | peak RSS (MB) | PriorToMesh at %d^3 (s) |" % args.mesh_resolution,
             "|---|---|---|---|"]
    lines += [f"| {r['backend']} | {r['build_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['mesh_s']:.1f} |" for r in rows]
    lines += ["", "spconv's CPU build runs single-threaded here (its CPU kernels race on several threads); "
              "no GPU was lent for this measurement.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", SECTION)


if __name__ == "__main__":
    main()
