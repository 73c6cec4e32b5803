"""DMTetFineTune timings: marching tetrahedra at grid resolution 128 / 256, and seconds per step and peak memory of
the geometry and texture passes at several render sizes. Guidance is a stand-in (a mean-squared pull towards a
colour), so the figures are the stage's own cost (mesh extraction, rasterisation, regularisers, backward, optimiser)
without Stable Diffusion. Each case runs in a fresh process so that peak RSS belongs to it.

    python bench/bench_dmtet.py [--device cpu|cuda] [--write]     (--write replaces "## DMTetFineTune" in RESULTS.md)
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from stage_timing import peak_rss_mb, write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## DMTetFineTune"


def _peak_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 20
    return peak_rss_mb()


def run_case(case: dict) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    import torch

    ops = load_pack().geodream_ops
    from importlib import import_module

    dmtet = import_module(f"{ops.__name__}.mesh.dmtet")
    finetune = import_module(f"{ops.__name__}.mesh.mesh_finetune")
    torch.set_num_threads(case.get("threads", torch.get_num_threads()))
    device = torch.device(case["device"])

    class Sphere:
        bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])

        def sdf(self, p):
            return p.norm(dim=-1) - 0.5

        def color(self, p):
            return (p + 1) / 2

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if case["kind"] == "marching":
        geometry = dmtet.DMTetGeometry.from_field(Sphere(), case["resolution"], device=device)
        times = []
        for _ in range(case["repeats"]):
            sync()
            start = time.perf_counter()
            vertices, faces = geometry.mesh()
            sync()
            times.append(time.perf_counter() - start)
        return {**case, "seconds": min(times), "faces": int(faces.shape[0]), "peak_mb": _peak_mb(device)}

    def pull(images, cameras, step, total):
        return ((images - 0.3) ** 2).mean()

    geometry_steps = case["steps"] + 1 if case["kind"] == "geometry" else 0
    texture_steps = case["steps"] + 1 if case["kind"] == "texture" else 0
    config = finetune.FineTuneConfig(tet_resolution=case["resolution"], geometry_steps=geometry_steps,
                                     texture_steps=texture_steps, render_size=case["size"], geometry_batch=1,
                                     checkpoint_every=10 ** 9)
    tuner = finetune.MeshFineTuner(Sphere(), pull, pull, config, seed=0, device=device)
    step = tuner.geometry_step if case["kind"] == "geometry" else tuner.texture_step
    step()  # warm-up (and, for texture, the one-off frozen mesh)
    tuner.step += 1
    sync()
    start = time.perf_counter()
    for _ in range(case["steps"]):
        step()
        tuner.step += 1
    sync()
    return {**case, "seconds": (time.perf_counter() - start) / case["steps"], "peak_mb": _peak_mb(device),
            "backend": tuner.renderer.rasterizer.backend}


def cases(device: str):
    out = [dict(kind="marching", resolution=r, repeats=3, device=device) for r in (128, 256)]
    out += [dict(kind="geometry", resolution=128, size=s, steps=3, device=device) for s in (256, 512)]
    out += [dict(kind="texture", resolution=128, size=s, steps=3, device=device) for s in (256, 512, 1024)]
    return out


def table(results, device_name, load) -> str:
    lines = [HEADING, "",
             f"Device: {device_name}, load average {load[0]:.1f} -> {load[1]:.1f} over the run. "
             "Sphere field (r = 0.5 in [-1, 1]^3); guidance is a stand-in loss, so these are "
             "the stage's own costs without Stable Diffusion. Peak memory: process peak RSS on CPU (includes the "
             "Python/torch baseline, ~300 MB), torch peak allocated on CUDA. The texture pass trains the release's "
             "hash grid (16 x 2 features, 2^19 entries; pure PyTorch off CUDA or without tiny-cuda-nn).", "",
             "| case | tet grid | render px | faces | s / step | peak MB | rasteriser |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        what = "marching tets (extract)" if r["kind"] == "marching" else f"{r['kind']} pass, batch 1"
        lines.append(f"| {what} | {r['resolution']} | {r.get('size', '-')} | {r.get('faces', '-')} | "
                     f"{r['seconds']:.3f} | {r['peak_mb']:.0f} | {r.get('backend', '-')} |")
    if not device_name.startswith("CPU"):
        return "\n".join(lines) + "\n"
    lines += ["", "CPU figures are upper bounds when the load average exceeds the core count. nvdiffrast needs CUDA: "
              "run `python bench/bench_dmtet.py --device cuda --write` on a GPU for its timings."]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    results, load_before = [], os.getloadavg()[0]
    for case in cases(args.device):
        done = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True, text=True)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            continue
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    import torch

    cuda = args.device.startswith("cuda")
    name = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    text = table(results, name, (load_before, os.getloadavg()[0]))
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", HEADING)


if __name__ == "__main__":
    main()
