"""Free-space skipping's threshold on thin shapes, before/after in one run: the mean opacity of 48 px renders of a thin
rod and a thin plate with the measured occupancy grid, under a fixed 0.01 (before) and under nerfacc's
min(0.01, mean occupancy) (after, the release's), against a dense reference (1024 uniform samples, nothing skipped).

    python bench/bench_thin_shapes.py [--write]   # --write replaces bench/RESULTS.md's section"""
import argparse
import platform
import sys
from pathlib import Path
from unittest import mock

from stage_timing import write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Free-space threshold on thin shapes (VSDRefineNeuS)"


def measure() -> list[dict]:
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


def section() -> str:
    import torch

    lines = [SECTION, "",
             f"One process, CPU {platform.machine()}, {torch.get_num_threads()} torch threads; 48 px, camera 2 units "
             "away, the grid measured once (nerfacc's warm-up update); a rod of radius 0.01, 1.2 long, and a plate "
             "0.02 thick, 1.2 wide, in a [-1, 1] box. Mean opacity over the image / largest difference of a pixel "
             "from the reference. `python bench/bench_thin_shapes.py --write`.", "",
             "| shape | inv_s | min(0.01, mean occupancy) | dense reference | fixed 0.01 (before) | nerfacc's min (after) |",
             "|---|---|---|---|---|---|"]
    for r in measure():
        cells = f"{r['dense'][0]:.4f} | " + " | ".join(f"{r[k][0]:.4f} / {r[k][1]:.3f}" for k in ("before", "after"))
        lines.append(f"| {r['shape']} | {r['inv_s']:.0f} | {r['threshold']:.5f} | {cells} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    text = section()
    print(text)
    if args.write:
        write_section(text, ROOT / "bench" / "RESULTS.md", SECTION)


if __name__ == "__main__":
    main()
