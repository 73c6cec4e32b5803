"""What a live preview costs against a training step, and how fast Cancel lands inside a render, on the CPU with the
release's field (16 x 150^3 volume, the real f_g with random weights, hash grid 16 x 2 of 2^19 rows) and tiny SD
twins for the guidance. Each measurement runs in a fresh process, so its peak RSS (over the RSS before it) is its own.

    python bench/bench_preview.py --resolution 64 --write

- step: one VSD training step at ``--resolution`` (after a 16 px warm-up step).
- preview after: the node's preview now (min(128, the step's render size) px, preview_settings' samples, chunks by
  no_graph_chunk_rays and timed_chunks).
- bytes per sample: one 1,024-ray chunk of 512 samples without a graph, its peak over its samples (what
  neus_renderer.BYTES_PER_SAMPLE stands for) and its seconds per sample. The preview as it was (128 px, 512
  samples per ray, 8,192-ray chunks: a 4.2M-sample chunk) is not run here (it needs ~16 GB); its peak and time
  are those per-sample figures times its samples.
- cancel before / after: a 64 px preview render, Cancel requested 1 s in; seconds until the render stopped
  (before: the old fixed 8,192-ray chunks, no check inside the render: it stops when it ends)."""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stage_timing import peak_rss_mb, rss_mb, write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Previews and Cancel inside a render"


def child(kind: str, resolution: int, threads: int) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import torch

    torch.set_num_threads(threads)
    from geodream_pack.geodream_ops import cancel
    from geodream_pack.geodream_ops.prior import release_frame
    from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
    from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
    from geodream_pack.geodream_ops.refine import neus_renderer
    from geodream_pack.geodream_ops.refine.refine_neus import Refinement, RefineSettings, evaluation_cameras
    from geodream_pack.geodream_ops.guidance.score_distillation import make_guidance_fn
    from geodream_pack.geodream_ops.guidance.sd_guidance import load_guidance
    from tests import twins_sd

    torch.manual_seed(0)
    volume = 0.1 * torch.randn(1, 16, 150, 150, 150)
    cost_volume = CostVolume(volume, GeometryDecoder().requires_grad_(False), release_frame.BBOX.clone())
    settings = RefineSettings(steps=3, resolution=resolution, half_resolution_until=0.0)
    if kind == "step":  # as bench_refine.py runs it on a shared CPU: 1,024-ray chunks, graphs kept within 3 GB
        from geodream_pack.geodream_ops.device_memory import free_bytes

        settings.render = neus_renderer.RenderSettings(
            chunk_rays=1024, keep_graph_fraction=min(1.0, 3 * 2 ** 30 / max(free_bytes(torch.device("cpu")), 1)))
        folder = Path(tempfile.mkdtemp()) / "sd"
        twins_sd.save_diffusers_folder(folder)
        run = Refinement(cost_volume, make_guidance_fn(load_guidance(folder), "a red ball"), settings)
        run.settings.resolution = 16
        run.train_step()
        run.settings.resolution = resolution
        before, start = rss_mb(), time.perf_counter()
        run.train_step()
        return {"seconds": time.perf_counter() - start, "peak_over_mb": peak_rss_mb() - before}
    run = Refinement(cost_volume, lambda *a: torch.zeros(()), settings)  # the field only
    field, render_settings = run.field, settings.render
    camera = evaluation_cameras(field, 30.0)
    if kind.startswith("cancel"):
        if kind == "cancel before":  # as it was: fixed chunks, no check inside
            neus_renderer.timed_chunks = lambda count, spr, limit: (slice(s, s + 8192) for s in range(0, count, 8192))
        requested = {}

        class Stop(Exception):
            pass

        def stop():
            if "at" in requested:
                raise Stop

        cancel.install(stop)
        threading.Timer(1.0, lambda: requested.setdefault("at", time.perf_counter())).start()
        try:
            with torch.no_grad():
                neus_renderer.render(field, camera, 64, 64, neus_renderer.preview_settings(render_settings))
        except Stop:
            pass
        return {"latency_s": time.perf_counter() - requested["at"]}
    if kind == "bytes per sample":
        neus_renderer.timed_chunks = lambda count, spr, limit: [slice(0, count)]
        size, used = 32, render_settings  # one chunk of 1,024 rays x 512 samples
    else:
        size, used = min(128, resolution), neus_renderer.preview_settings(render_settings)
    before, start = rss_mb(), time.perf_counter()
    with torch.no_grad():
        neus_renderer.render(field, camera, size, size, used)
    out = {"seconds": time.perf_counter() - start, "peak_over_mb": peak_rss_mb() - before, "size": size,
           "samples_per_ray": used.n_coarse + used.n_importance,
           "chunk_rays": neus_renderer.no_graph_chunk_rays(used, "cpu")}
    if kind == "bytes per sample":
        samples = 1024 * out["samples_per_ray"]
        out["bytes_per_sample"] = out["peak_over_mb"] * 2 ** 20 / samples
        out["us_per_sample"] = out["seconds"] / samples * 1e6
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--kinds", nargs="+", default=["bytes per sample", "step", "preview after", "cancel before",
                                                      "cancel after"])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.resolution, args.threads)))
        return
    rows = {}
    for kind in args.kinds:
        out = subprocess.run([sys.executable, __file__, "--child", kind, "--resolution", str(args.resolution),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        print(kind, rows[kind], flush=True)
    with open("/proc/loadavg", encoding="ascii") as f:
        load = f.read().split()[0]
    lines = [SECTION, "",
             f"CPU: {platform.machine()}, {args.threads} torch thread(s), shared machine (load average {load}: read "
             f"ratios). The release's field, tiny SD twins; training at {args.resolution} px. "
             f"`python bench/bench_preview.py --resolution {args.resolution} --write`", "",
             "| measurement | seconds | peak over RSS before (MB) | notes |", "|---|---|---|---|"]
    for kind, row in rows.items():
        seconds = row.get("seconds", row.get("latency_s"))
        notes = ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                          if k not in ("seconds", "latency_s", "peak_over_mb"))
        peak = f"{row['peak_over_mb']:.0f}" if "peak_over_mb" in row else ""
        lines.append(f"| {kind} | {seconds:.2f} | {peak} | {notes} |")
    if {"step", "preview after", "bytes per sample"} <= set(rows):
        step, after, per = rows["step"], rows["preview after"], rows["bytes per sample"]
        old = 128 * 128 * 512  # samples of the old preview, in chunks of 8,192 rays x 512 samples
        old_s, old_peak = old * per["us_per_sample"] / 1e6, 8192 * 512 * per["bytes_per_sample"] / 2 ** 20
        lines += ["", f"A preview now takes {after['seconds'] / step['seconds']:.2f} of a training step's time and "
                  f"{after['peak_over_mb'] / max(step['peak_over_mb'], 1):.2f} of its peak memory. The old preview "
                  f"(extrapolated from the per-sample figures): {old_s:.0f} s ({old_s / step['seconds']:.1f} steps), "
                  f"peak {old_peak:.0f} MB ({old_peak / max(step['peak_over_mb'], 1):.1f}x a step's)."]
    print("\n".join(lines))
    if args.write:
        write_section("\n".join(lines) + "\n", ROOT / "bench" / "RESULTS.md", SECTION)


if __name__ == "__main__":
    main()
