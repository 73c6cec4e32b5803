"""How much each change of the third fidelity pass (issue 23) moves a number, ours before against after, in one
run, on synthetic inputs (no real weights here: U²-Net is the tests' twin); and free-space skipping's threshold on
thin shapes: the mean opacity of 48 px renders of a thin rod and a thin plate with the measured occupancy grid, under
a fixed 0.01 (before) and under nerfacc's min(0.01, mean occupancy) (after, the release's), against a dense
reference (1024 uniform samples, nothing skipped); and the early stop's transmittance, NeuS opacities of the kept
sections with the neighbour's slope (before) against nerfacc's alpha_fn over every sample in an occupied cell (after).

    python bench/bench_fidelity_sizes.py [--write]   # --write replaces bench/RESULTS.md's two sections"""
import argparse
import platform
import sys
import tempfile
from pathlib import Path
from unittest import mock

from stage_timing import write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Fidelity third pass: size of each change"
THIN_SECTION = "## Free-space threshold on thin shapes (VSDRefineNeuS)"


def measure_thin_shapes() -> list[dict]:
    """Per shape and inv_s: the grid's threshold, and for the reference, before and after the mean opacity over the
    image and the largest pixel difference from the reference."""
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()

    from geodream_pack.geodream_ops.refine import neus_renderer as R
    from geodream_pack.geodream_ops.refine.occupancy_grid import ALPHA_THRESHOLD, OccupancyGrid
    from tests.test_occupancy_grid import Plate, Rod
    from tests.test_neus_renderer import _camera

    rows = []
    for name, kind in (("rod r 0.01", Rod), ("plate 0.02 thick", Plate)):
        for inv_s in (20.0, 50.0, 100.0):
            field = kind(inv_s=inv_s)
            field.occupancy = OccupancyGrid(field.bbox)
            field.occupancy.update(field, 0)

            def opacity(**kw):
                return R.render(field, _camera(), 48, 48, R.RenderSettings(chunk_rays=512, **kw))["opacity"][0, ..., 0]

            dense = opacity(n_coarse=1024, skip_free_space=False)
            after = opacity()
            with mock.patch.object(OccupancyGrid, "threshold", ALPHA_THRESHOLD):
                before = opacity()
            rows.append({"shape": name, "inv_s": inv_s, "threshold": field.occupancy.threshold,
                         **{k: (float(v.mean()), float((v - dense).abs().max()))
                            for k, v in (("dense", dense), ("before", before), ("after", after))}})
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def thin_shapes_section() -> str:
    import torch

    lines = [THIN_SECTION, "",
             f"One process, CPU {platform.machine()}, {torch.get_num_threads()} torch threads; 48 px, camera 2 units "
             "away, the grid measured once (nerfacc's warm-up update); a rod of radius 0.01, 1.2 long, and a plate "
             "0.02 thick, 1.2 wide, in a [-1, 1] box. Mean opacity over the image / largest difference of a pixel "
             "from the reference. `python bench/bench_fidelity_sizes.py --write`.", "",
             "| shape | inv_s | min(0.01, mean occupancy) | dense reference | fixed 0.01 (before) | nerfacc's min (after) |",
             "|---|---|---|---|---|---|"]
    for r in measure_thin_shapes():
        cells = f"{r['dense'][0]:.4f} | " + " | ".join(f"{r[k][0]:.4f} / {r[k][1]:.3f}" for k in ("before", "after"))
        lines.append(f"| {r['shape']} | {r['inv_s']:.0f} | {r['threshold']:.5f} | {cells} |")
    return "\n".join(lines) + "\n"


def kept_sections_stop(field, points, lengths):
    """The stop before this pass (occupancy_grid.contributing at 3224c3c), kept here to measure the change: the
    transmittance from NeuS opacities of the kept sections only, slope from the neighbouring section."""
    import torch
    from geodream_pack.geodream_ops.refine import occupancy_grid as G

    flat = points.reshape(-1, 3)
    candidate = G.maybe_occupied(field, flat, lengths.reshape(-1))
    sdf = torch.full((flat.shape[0],), torch.inf)
    if candidate.any():
        sdf[candidate] = field.sdf(flat[candidate]).reshape(-1).float()
    sdf, inv_s = sdf.reshape(lengths.shape), field.inv_s.detach()
    keep = G.step_opacity(sdf, inv_s, G.step_length(field, lengths)) >= G.alpha_threshold(field)
    slope = (sdf[:, 1:] - sdf[:, :-1]) / (points[:, 1:] - points[:, :-1]).norm(dim=-1).clamp_min(1e-9)
    slope = torch.cat([slope, slope[:, -1:]], dim=-1).nan_to_num(0.0, 0.0, 0.0).clamp(-1.0, 0.0)
    alpha = torch.where(keep, G.step_opacity(sdf, inv_s, slope.abs() * lengths), torch.zeros_like(lengths))
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1]], dim=-1), dim=-1)
    return keep & (transmittance >= G.EARLY_STOP)


def measure_stop() -> list[tuple[str, str, str]]:
    """(change, input, figure) rows for the early stop: 48 px renders, the grid measured, before against after."""
    import torch
    from geodream_pack.geodream_ops.cameras import Cameras
    from geodream_pack.geodream_ops.refine import neus_renderer as R
    from geodream_pack.geodream_ops.refine.occupancy_grid import OccupancyGrid
    from tests.test_neus_renderer import SphereField
    from tests.test_occupancy_grid import Plate, Slab

    rows = []
    for name, field in (("sphere r 0.5, inv_s 20", SphereField(inv_s=20.0)),
                        ("sphere r 0.5, inv_s 100", SphereField(inv_s=100.0)),
                        ("sphere r 0.5, inv_s 2000", SphereField(inv_s=2000.0)),
                        ("slab 0.4 thick, inv_s 100", Slab(inv_s=100.0)),
                        ("plate 0.02 thick, inv_s 100", Plate(inv_s=100.0))):
        field.occupancy = OccupancyGrid(field.bbox)
        field.occupancy.update(field, 0)
        cams = Cameras.from_spherical(torch.tensor([30.0]), torch.tensor([10.0]), 2.0, 40.0)
        for label, kw in (("512 uniform", {}), ("64 + 64", dict(n_coarse=64, n_importance=64))):
            counts = {}

            def render(rule, key, **extra):
                def counted(*a):
                    mask = rule(*a)
                    counts[key] = counts.get(key, 0) + int(mask.sum())
                    return mask
                with mock.patch.object(R, "contributing", counted):
                    return R.render(field, cams, 48, 48, R.RenderSettings(chunk_rays=768, **kw, **extra))

            after, before = render(R.contributing, "after"), render(kept_sections_stop, "before")
            with mock.patch("geodream_pack.geodream_ops.refine.occupancy_grid.EARLY_STOP", 0.0):
                no_stop = render(R.contributing, "no stop")
            d = (after["opacity"] - before["opacity"]).abs()
            c = (after["rgb"] - before["rgb"]).abs().amax(-1)
            lost = {k: float((v["opacity"] - no_stop["opacity"]).abs().max()) for k, v in (("b", before), ("a", after))}
            rows.append(("9. early stop's transmittance", f"{name}, {label}, 48 px",
                         f"opacity max {float(d.max()):.4f} mean {float(d.mean()):.5f}, "
                         f"colour max {float(c.max()):.4f}; "
                         f"sections kept {counts['after'] / counts['before']:.2f}x; opacity cut by the stop "
                         f"{lost['b']:.4f} -> {lost['a']:.4f}"))
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def measure() -> list[tuple[str, str, str]]:
    """(change, input, figure) rows."""
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import torch
    import torch.nn.functional as F

    from geodream_pack.geodream_ops.cameras import CameraSampler, Cameras
    from geodream_pack.geodream_ops.images import resize_views
    from geodream_pack.geodream_ops.mesh import dmtet
    from geodream_pack.geodream_ops.multiview import matting
    from geodream_pack.geodream_ops.prior.release_frame import SCALE, release_c2w
    from geodream_pack.geodream_ops.texture.environment_map import EnvironmentMap
    from tests.test_dmtet_finetune import SphereWithFloater
    from tests.test_views_on_white import _soft_edged_grid
    from tests.twins_rembg import write_u2net

    rows = []
    # 4: the tet grid's box with a floater near a corner, without and with the release's outlier removal
    field = SphereWithFloater((0.0, 0.0, 0.0), 0.4)
    after = dmtet.surface_box(field, 32)
    keep = dmtet.drop_small_components
    dmtet.drop_small_components = lambda vertices, faces: (vertices, faces)
    try:
        before = dmtet.surface_box(field, 32)
    finally:
        dmtet.drop_small_components = keep
    ratio = float(((before[1] - before[0]) / (after[1] - after[0])).max())
    rows.append(("4. tet grid box, floaters removed first", "sphere r 0.4 + a 24-face speck at (0.85, 0.85, 0.85), R 32",
                 f"box (and cell) {ratio:.2f}x larger before"))
    # 3: Zero123++ tiles, one pass on the grey tile (before) against the release's two passes (after)
    u2net = write_u2net(Path(tempfile.mkdtemp()) / "u2net.onnx")
    tiles = _soft_edged_grid()
    two = matting.matte_views(matting.zero123plus_first_pass(tiles, u2net, 32), "rembg", u2net)[0]
    one = matting.matte_views(resize_views(tiles, 32), "rembg", u2net)[0]
    diff = (two - one).abs().amax(-1)
    rows.append(("3. Zero123++ matting, two passes", "6 soft-edged 40 px tiles on grey -> 32 px, twin U²-Net",
                 f"max {float(diff.max()):.2f}, mean {float(diff.mean()):.3f}, {100 * float((diff > 1 / 255).float().mean()):.0f} % "
                 f"of pixels over 1/255, relative L2 {100 * float((two - one).norm() / two.norm()):.0f} %"))
    # 6: texture-pass background, per ray (before) against one direction per view (after), at initialisation
    worst, mean = 0.0, 0.0
    for seed in range(5):
        torch.manual_seed(seed)
        env = EnvironmentMap()
        cam = Cameras.from_spherical(torch.tensor([30.0]), torch.tensor([20.0]), 1.1, 50.0)
        _, dirs = cam.rays(64, 64)
        with torch.no_grad():
            gap = (env(dirs) - env(-cam.c2w[:, :3, 3])[:, None, None]).abs()
        worst, mean = max(worst, float(gap.max())), mean + float(gap.mean()) / 5
    rows.append(("6. texture-pass background, flat per view", "5 random-initialised environment maps, fovy 50, 64 px",
                 f"per-ray gradient off the flat colour by up to {worst:.3f} (mean {mean:.4f}); grows as it trains"))
    # 7: 1024 -> 512 for the VAE, antialiased (before) against plain bilinear = 2x2 box (after)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(1024), torch.arange(1024), indexing="ij")
    sharp = torch.stack([((xx // 3 + yy // 3) % 2).float(), torch.sin(xx / 7.0) * 0.5 + 0.5,
                         torch.rand(1024, 1024, generator=g)])[None] * 0.5 + 0.25
    smooth = F.interpolate(torch.rand(1, 3, 64, 64, generator=g), (1024, 1024), mode="bilinear", align_corners=False)
    for name, image in (("3 px checker + noise", sharp), ("smooth (noise upsampled 16x)", smooth)):
        a = F.interpolate(image, (512, 512), mode="bilinear", align_corners=False, antialias=True)
        b = F.interpolate(image, (512, 512), mode="bilinear", align_corners=False)
        rows.append(("7. texture pass 1024 -> 512", f"1024 px texture, {name}",
                     f"relative L2 {100 * float((a - b).norm() / b.norm()):.1f} %"))
    # 8: the LoRA's camera input, our c2w (before) against the release's (after)
    cameras = CameraSampler().sample(256, torch.Generator().manual_seed(0), unit=SCALE)
    release = release_c2w(cameras)
    change = (cameras.c2w - release).flatten(1).norm(dim=1).mean() / release.flatten(1).norm(dim=1).mean()
    rows.append(("8. LoRA camera input", "256 cameras of the refinement's sampler, the release's box",
                 f"relative L2 of the 16 inputs {100 * float(change):.0f} %"))
    # 5: SDS, text + s (text - uncond) against uncond + s (text - uncond): the guidance term grows by (s + 1) / s
    rows.append(("5. SDS form", "CFG 100 (closed form)",
                 "eps_pretrain moves by (text - uncond), 1 % of the guidance term"))
    return rows + measure_stop()


def section() -> str:
    import torch

    lines = [SECTION, "",
             f"One process, CPU {platform.machine()}, {torch.get_num_threads()} torch threads; synthetic inputs, no real "
             "weights. Point 1 (free-space threshold) has its own section, \"Free-space threshold on thin shapes\". "
             "9 (issue 23's follow-up): the early stop on NeuS opacities of the kept sections, slope from the "
             "neighbour (before), against nerfacc's alpha_fn over every section in an occupied cell (after); 48 px "
             "renders from 2 units, 10 deg up, the grid measured; \"opacity cut by the stop\" is the largest pixel "
             "difference from the same render without the stop. `python bench/bench_fidelity_sizes.py --write`.", "",
             "| change | input | before -> after |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in measure()]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    for title, text in ((THIN_SECTION, thin_shapes_section()), (SECTION, section())):
        print(text)
        if args.write:
            write_section(text, ROOT / "bench" / "RESULTS.md", title)


if __name__ == "__main__":
    main()
