"""python -m headless WORKFLOW.json [--set NodeType.input=value ...]

Runs a workflow (UI or API format) with this pack's nodes and core stand-ins, printing progress and the files
written. Models are read from $GEODREAM_MODELS_DIR (else the ComfyUI install's models folder, else ./models; a
workflow's missing models are listed before anything runs, once its values check out, with
`python -m headless.models download --for` it), outputs go to $GEODREAM_OUTPUT_DIR, previews to $GEODREAM_TEMP_DIR."""
from __future__ import annotations

import argparse
import sys

from .run import run_workflow
from .validation import OVERRIDE_FORMAT, parse_overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow")
    parser.add_argument("--set", action="append", default=[], metavar=OVERRIDE_FORMAT,
                        help="override an input of every node of a type (e.g. a model file name); one that matches "
                             "no node or input of the workflow is an error")
    args = parser.parse_args(argv)
    try:
        outputs = run_workflow(args.workflow, parse_overrides(args.set))
    except Exception as exc:  # a clear one-line error for the command line; tests call run_workflow directly
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in outputs:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
