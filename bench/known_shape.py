"""Known-shape benchmark: the pack's stages reconstruct objects whose answer is known (geodream_ops/known_shape.py),
measured per stage on the exported GLB against the truth in the glTF frame; and the visual hull of each multi-view
recipe's views through Build Cost Volume's camera handling.

    nice python bench/known_shape.py [--size full|ci] [--objects block,plate,cup] [--device cuda] [--write]

--write puts the table into bench/RESULTS.md (section "Known shapes") and the picture (truth beside each stage at
a held-out camera, per object and decoder) into docs/known_shape.png. The full size is sized for ~30 minutes on an
idle 2-core CPU (its block run took ~15 minutes on a machine shared by six jobs); --size ci is the CI test's size
(~6 minutes for everything). --measure-only re-measures the GLBs a stopped run left behind."""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from headless.pack import load_pack  # noqa: E402

pack = load_pack()
from geodream_pack.geodream_ops import known_shape  # noqa: E402
from geodream_pack.geodream_ops.cameras import to_gltf_frame  # noqa: E402
from geodream_pack.geodream_ops.known_objects import (OBJECTS, VIEW_RECIPES, make_object, posed_views,  # noqa: E402
                                                     view_cameras)
from geodream_pack.geodream_ops import mesh_metrics  # noqa: E402
from geodream_pack.geodream_ops.prior import marching_cubes, start_volume  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from stage_timing import write_section  # noqa: E402

SIZES = {
    "ci": known_shape.Sizes(),
    "full": known_shape.Sizes(object_resolution=80, volume_resolution=48, refine_steps=400, refine_resolution=48,
                              n_coarse=96, tet_resolution=48, geometry_steps=100, texture_steps=300, render_size=96,
                              geometry_batch=2, texture_size=512, mesh_resolution=96, eval_size=96, eval_points=20000),
}
SECTION = "## Known shapes"


def hull_metrics(name: str, recipe: str, sizes) -> dict:
    """The visual hull of the recipe's views (start_volume.hull_sdf, Build Cost Volume's projection) against the
    truth: geometry only."""
    obj = make_object(name, sizes.object_resolution)
    cameras = view_cameras(recipe)
    box = start_volume.release_box()
    sdf = start_volume.hull_sdf(posed_views(obj, cameras, 128), cameras, box, sizes.volume_resolution)
    mesh = marching_cubes.extract_mesh(start_volume.plain_cost_volume(sdf, box), sizes.volume_resolution)
    points, normals, _ = mesh_metrics.sample_textured(mesh, sizes.eval_points)
    truth = known_shape.truth_samples(obj, sizes.eval_points)
    grey = torch.full_like(points, 0.5)
    return mesh_metrics.compare((to_gltf_frame(points), to_gltf_frame(normals), grey), truth, obj.diagonal)


def picture(rows, path: Path) -> None:
    """rows: (label, truth [N, H, W, 3], {stage: render}) -> one row per label: truth | each stage, view 0 and 1."""
    from PIL import Image, ImageDraw

    tiles = []
    for label, truth, renders in rows:
        images = [truth[:2]] + [renders[s][:2] for s in known_shape.STAGES]
        strip = np.concatenate([np.concatenate(list(im.clamp(0, 1).numpy()), 0) for im in images], 1)
        tiles.append((label, (strip * 255).astype(np.uint8)))
    height = sum(t.shape[0] + 14 for _, t in tiles)
    width = max(t.shape[1] for _, t in tiles)
    canvas = Image.new("RGB", (width, height + 14), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, 1), "truth | refinement | DMTet geometry | texture + bake (held-out cameras)", fill="black")
    y = 14
    for label, tile in tiles:
        draw.text((2, y), label, fill="black")
        canvas.paste(Image.fromarray(tile), (0, y + 14))
        y += tile.shape[0] + 14
    canvas.save(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--objects", default=",".join(OBJECTS))
    parser.add_argument("--fg-objects", default="block", help="objects also run with the release's f_g (random, "
                        "frozen; its V fitted to the start sphere): ~3x the plain decoder's time per step")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="/tmp/geodream_known_shape")
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--measure-only", action="store_true", help="measure the GLBs an earlier (possibly "
                        "stopped) run left in --out instead of running the stages; runs without all three are left out")
    args = parser.parse_args(argv)
    sizes = SIZES[args.size]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    lines = [SECTION, "", f"`nice python bench/known_shape.py --size {args.size}` on {args.device} "
             f"({torch.get_num_threads()} threads). Sizes: {sizes.__dict__ | {'hash_grid': 'small (CPU)'}}.", "",
             "Per stage, on the exported GLB read back (trimesh; the pack's loader agrees: 'loaders'), in the glTF "
             "frame. CD: Chamfer-L1 in % of the truth's box diagonal; F@1/F@2: F-score at 1 %/2 % of it; NC: signed "
             "normal consistency; PSNR: textured mesh vs truth at 6 held-out cameras; frame: nearer the truth than "
             "any mirror/turn of it. Targets: F@1 >= 0.90, NC >= 0.90, PSNR >= 25 dB.", "",
             "| object | decoder | stage | CD % | F@1 | F@2 | NC | PSNR dB | frame | loaders | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    runs = [(name, "plain") for name in args.objects.split(",")]
    runs += [(name, "release-fg") for name in args.fg_objects.split(",") if name]
    for name, decoder in runs:
        folder = Path(args.out) / f"{name}_{decoder}"
        if args.measure_only:
            results = known_shape.measure_files(name, folder, sizes)
            if results is None:
                continue
        else:
            results = known_shape.run(name, folder, decoder=decoder, sizes=sizes, device=args.device)
        for stage in known_shape.STAGES:
            m = results[stage]
            seconds = results.get("seconds", {}).get("refinement" if stage == "refinement" else "dmtet")
            timed = "-" if seconds is None else f"{seconds:.0f}"  # --measure-only does not time
            lines.append(f"| {name} | {decoder} | {stage} | {m['chamfer_l1_pct']:.2f} | {m['fscore_1pct']:.3f} | "
                         f"{m['fscore_2pct']:.3f} | {m['normal_consistency']:.3f} | {m['psnr_db']:.1f} | "
                         f"{'ok' if m['frame_check'] else 'WRONG'} | {'yes' if m['loaders_agree'] else 'NO'} | "
                         f"{timed} |")
        rows.append((f"{name} / {decoder}", results["truth"], {s: results[s]["render"] for s in known_shape.STAGES}))
        print("\n".join(lines[-3:]), flush=True)
    lines += ["", "Visual hull of each recipe's views (Build Cost Volume's projection; geometry only, before any "
              "refinement: a frame mismatch between views and cameras shows here as a wrong hull):", "",
              "| object | recipe | CD % | F@1 | F@2 | NC |", "|---|---|---|---|---|---|"]
    for name in args.objects.split(","):
        for recipe in VIEW_RECIPES:
            m = hull_metrics(name, recipe, sizes)
            lines.append(f"| {name} | {recipe} | {m['chamfer_l1_pct']:.2f} | {m['fscore_1pct']:.3f} | "
                         f"{m['fscore_2pct']:.3f} | {m['normal_consistency']:.3f} |")
    lines += ["", f"Total {time.perf_counter() - started:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", SECTION)
        picture(rows, ROOT / "docs" / "known_shape.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
