"""bench/gpu_check.py keeps working without a GPU: its --smoke run builds every stage's models at tiny sizes on the
CPU, times them with the same code as the real-size run, and writes its section of a RESULTS file in place."""
import re
import subprocess
import sys
from pathlib import Path

from geodream_pack.geodream_ops.refine.refine_neus import RefineSettings

ROOT = Path(__file__).resolve().parent.parent


def test_smoke_run_times_every_stage_and_writes_its_section(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmarks\n\n## GPU check\n\nold figures\n\n## Other\n\nkept\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--write", str(results)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = results.read_text(encoding="utf-8")
    assert "old figures" not in text and text.endswith("## Other\n\nkept\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and " s / " in line]
    stages = ["MVDream", "Zero123++", "Zero123-XL (8 views", "Zero123-XL (4 views", "BuildCostVolume", "PriorToMesh",
              "Field step, pure-PyTorch", "VSDRefineNeuS at 8 px",
              "VSDRefineNeuS at 16 px", "DMTetFineTune geometry", "DMTetFineTune texture", "Uni3DScore"]
    assert len(rows) == len(stages)
    for row, stage in zip(rows, stages):
        assert stage in row
        cells = [c.strip() for c in row.strip("|").split("|")]
        seconds = float(cells[1].split(" s / ")[0])
        assert 0 < seconds < 120
        assert 0 < float(cells[3]) < 24 and cells[4] == "yes"  # peak GB of a tiny run
        if "Field step" in stage:  # samples/s and field/floor of the step, both from the same timing
            rate, ratio = re.search(r"([\d,]+) samples/s, field/floor ([\d.]+)", row).groups()
            assert float(rate.replace(",", "")) > 0 and float(ratio) > 0
        if "PriorToMesh" in stage:  # the node and f_g's floor against marching cubes alone, timed in one run
            mesh, floor = re.search(r"([\d.]+)x marching cubes alone, f_g at the fewest points ([\d.]+)x", row).groups()
            assert float(mesh) > 0 and float(floor) > 0
        if "VSDRefineNeuS" in stage:
            share = float(cells[5].rstrip("%"))
            assert 0 < share < 100
            # the whole-stage estimate is the release's iterations (the refinement's default) at this step time
            minutes = float(re.match(r"([\d.]+) min", cells[2]).group(1))
            # both cells are rounded: seconds to 0.001 (times the iterations) and minutes to 0.1
            steps = RefineSettings().steps
            assert abs(minutes - seconds * steps / 60) <= 0.0005 * steps / 60 + 0.05 + 1e-6
