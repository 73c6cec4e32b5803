"""Seconds per VSD refinement step on the CPU with the release's field (16 x 150^3 volume, the real f_g with random
weights, hash grid 16 x 2 of 2^19 rows, the renderer's default sampling) and tiny random SD twins (real SD 2.1's UNet cost
is gpu_check.py's business), before and after a change, side by side in one run: "before" is another revision of
the pack (exported with git archive) driven by this same script. Also: the share of a step spent rendering, samples
per second through the renderer, peak RSS, and the pure-PyTorch hash grid's forward + backward throughput.

    python bench/bench_refine.py --before d85f318 --resolutions 64 --write
Each (revision, resolution) runs in a fresh process so its peak RSS is its own. One warm-up step at 16 px pays the
one-off costs; then ``--steps`` timed steps at full resolution."""
import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stage_timing import export, timed_guidance, write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## VSDRefineNeuS"


def run_one(root: Path, resolution: int, steps: int, chunk_rays: int, graph_budget_gb: float, threads: int) -> dict:
    sys.path.insert(0, str(root))
    from headless.pack import load_pack

    load_pack()
    import torch

    torch.set_num_threads(threads)
    from geodream_pack.geodream_ops.prior import release_frame
    from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
    from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
    from geodream_pack.geodream_ops.refine.neus_renderer import RenderSettings
    from geodream_pack.geodream_ops.refine.refine_neus import Refinement, RefineSettings
    from geodream_pack.geodream_ops.guidance.score_distillation import make_guidance_fn
    from geodream_pack.geodream_ops.guidance.sd_guidance import load_guidance
    from tests import twins_sd

    folder = Path(tempfile.mkdtemp()) / "sd"
    twins_sd.save_diffusers_folder(folder)
    timed_fn, spent = timed_guidance(make_guidance_fn(load_guidance(folder), "a red ball"))

    render = {"chunk_rays": chunk_rays}
    if "keep_graph_fraction" in RenderSettings.__dataclass_fields__:  # a fixed budget, whatever else runs here
        from geodream_pack.geodream_ops.device_memory import free_bytes

        render["keep_graph_fraction"] = min(1.0, graph_budget_gb * 2 ** 30 / max(free_bytes(torch.device("cpu")), 1))
    torch.manual_seed(0)
    volume = 0.1 * torch.randn(1, 16, 150, 150, 150)
    cost_volume = CostVolume(volume, GeometryDecoder().requires_grad_(False), release_frame.BBOX.clone())
    settings = RefineSettings(steps=steps + 1, resolution=resolution, half_resolution_until=0.0,
                              render=RenderSettings(**render))
    run = Refinement(cost_volume, timed_fn, settings)
    run.settings.resolution = 16  # warm-up
    run.train_step()
    run.settings.resolution = resolution
    spent["guidance"] = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step()
    total = (time.perf_counter() - start) / steps
    render_s = total - spent["guidance"] / steps
    samples = resolution * resolution * (settings.render.n_coarse + settings.render.n_importance)

    encoding = run.field.texture.encoding
    points = torch.rand(2 ** 16, 3)
    start = time.perf_counter()
    encoding(points).square().sum().backward()
    hash_rate = points.shape[0] / (time.perf_counter() - start)
    return {"resolution": resolution, "s_per_step": total, "render_share": render_s / total,
            "samples_per_s": samples / render_s, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "hash_points_per_s": hash_rate, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--before", help="revision to compare with (e.g. the merge base)")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[64])
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--chunk-rays", type=int, default=1024, help="rays per chunk (the default 8192 needs ~10 GB)")
    parser.add_argument("--graph-budget-gb", type=float, default=3.0, help="memory for kept graphs (one pass)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    common = ["--steps", str(args.steps), "--chunk-rays", str(args.chunk_rays), "--graph-budget-gb",
              str(args.graph_budget_gb), "--threads", str(args.threads)]
    if args.child:
        root, resolution = args.child.rsplit(":", 1)
        print(json.dumps(run_one(Path(root), int(resolution), args.steps, args.chunk_rays, args.graph_budget_gb,
                                 args.threads)))
        return
    trees = ([(args.before, export(args.before))] if args.before else []) + [("this tree", ROOT)]
    rows = []
    for resolution in args.resolutions:
        for name, tree in trees:
            out = subprocess.run([sys.executable, __file__, "--child", f"{tree}:{resolution}"] + common,
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append({"revision": name, **json.loads(out)})
            print(rows[-1], flush=True)
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[0]
    lines = [SECTION, "",
             f"CPU: {platform.machine()}, {args.threads} torch thread(s), shared machine (load average {load} at the "
             "end of the run: other sessions' jobs, so absolute figures are slow; the ratio is what to read). The "
             "release's field with the real f_g (random weights), tiny SD twins for the guidance, "
             f"{args.chunk_rays} rays per chunk, graph budget {args.graph_budget_gb:g} GB; {args.steps} timed "
             f"step(s) after a warm-up. `python bench/bench_refine.py {'--before ' + args.before + ' ' if args.before else ''}"
             f"--resolutions {' '.join(map(str, args.resolutions))} --write`.", "",
             "| revision | render px | s / step | rendering share | samples / s (rendering) | peak RSS (MB) | "
             "hash grid fwd+bwd (points/s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['revision']} | {r['resolution']} | {r['s_per_step']:.1f} | {r['render_share']:.0%} | "
                     f"{r['samples_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['hash_points_per_s']:,.0f} |")
    if args.before:
        for resolution in args.resolutions:
            pair = [r for r in rows if r["resolution"] == resolution]
            lines.append("")
            lines.append(f"{resolution} px: this tree takes {pair[1]['s_per_step'] / pair[0]['s_per_step']:.2f}x the "
                         f"time per step of {args.before} ({pair[0]['s_per_step'] / pair[1]['s_per_step']:.2f}x "
                         f"faster); hash grid {pair[1]['hash_points_per_s'] / pair[0]['hash_points_per_s']:.2f}x.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", SECTION)

if __name__ == "__main__":
    main()
