"""Peak RAM and notices of a diffusers load, with ``accelerate`` (diffusers' low_cpu_mem_usage path: weights
loaded once, into empty modules) against without it (diffusers' fallback: modules initialised at random, then the
weights loaded and copied in, with a notice per model part). Each load in a fresh process; "without" is the same
install with diffusers told that accelerate is absent, so both rows run the same files in one run.

    python bench/bench_loading.py --write

The loads are of the tests' twins (tests/twins_multiview.py, tests/twins_sd.py). A first load pays the imports;
the second is measured: its peak RSS (sampled every millisecond) over the RSS before it."""
import argparse
import contextlib
import gc
import io
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stage_timing import rss_mb, write_section  # bench/ is the script's folder

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Loading diffusers models (accelerate)"


def child(model: str, accelerate: bool, folder: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    import diffusers.utils.import_utils as import_utils

    if not accelerate:
        import_utils._accelerate_available = False
    from geodream_pack.geodream_ops.guidance.sd_guidance import load_model
    from geodream_pack.geodream_ops.multiview.zero123plus import load_diffusers

    notices = io.StringIO()
    handler = logging.StreamHandler(notices)
    logging.getLogger().addHandler(handler)
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).addHandler(handler)
    def load():
        return load_diffusers(folder, "v1.2") if model == "Zero123++" else load_model(folder)

    with contextlib.redirect_stderr(notices):
        load()  # the imports and first-use costs
        first = notices.getvalue().count("accelerate")
        gc.collect()
        before, peak, done = rss_mb(), [0.0], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mb())
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        loaded = load()
        done.set()
        sampler.join()
    del loaded
    return {"peak_over_mb": peak[0] - before, "accelerate_notices": first}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    if args.child:
        model, accelerate, folder = args.child
        print(json.dumps(child(model, accelerate == "1", Path(folder))))
        return
    sys.path.insert(0, str(ROOT))
    from headless.pack import load_pack

    load_pack()
    from tests import twins_multiview, twins_sd

    scratch = Path(tempfile.mkdtemp())
    folders = {"Zero123++": scratch / "zero123plus-v1.2", "SD 2.1-base": scratch / "sd21-base"}
    twins_multiview.write_zero123plus(folders["Zero123++"])
    twins_sd.save_diffusers_folder(folders["SD 2.1-base"])
    rows = []
    for model, folder in folders.items():
        for accelerate in ("0", "1"):
            out = subprocess.run([sys.executable, __file__, "--child", model, accelerate, str(folder)],
                                 capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            rows.append({"model": model, "accelerate": accelerate == "1", **json.loads(out)})
            print(rows[-1], flush=True)
    size = {m: sum(p.stat().st_size for p in f.rglob("*.safetensors")) / 2 ** 20 for m, f in folders.items()}
    lines = [SECTION, "", "Tiny twins (weights on disk: " + ", ".join(f"{m} {s:.1f} MB" for m, s in size.items())
             + "); peak RSS of the load over the RSS before it, in a fresh process each. "
             "`python bench/bench_loading.py --write`", "",
             "| model | accelerate | peak over RSS before (MB) | notices naming accelerate |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {'yes' if r['accelerate'] else 'no'} | {r['peak_over_mb']:.1f} | "
              f"{r['accelerate_notices']} |" for r in rows]
    print("\n".join(lines))
    if args.write:
        write_section("\n".join(lines) + "\n", ROOT / "bench" / "RESULTS.md", SECTION)


if __name__ == "__main__":
    main()
