"""python -m headless WORKFLOW.json [--set NodeType.input=value ...]

Runs a workflow (UI or API format) with this pack's nodes and core stand-ins, printing progress and the files
written. Models are read from $GEODREAM_MODELS_DIR (else the ComfyUI install's models folder, else ./models; a
workflow's missing models are listed before anything runs, with `python -m headless.models download --for` it),
outputs go to $GEODREAM_OUTPUT_DIR."""
from __future__ import annotations

import argparse
import json
import sys

from .run import run_workflow


def _parse_set(items):
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        node_type, _, name = key.partition(".")
        if not (node_type and name and _):
            raise SystemExit(f"--set expects NodeType.input=value, got {item!r}")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        overrides.setdefault(node_type, {})[name] = value
    return overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headless", description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow")
    parser.add_argument("--set", action="append", default=[], metavar="NodeType.input=value",
                        help="override an input of every node of a type (e.g. a model file name)")
    args = parser.parse_args(argv)
    try:
        outputs = run_workflow(args.workflow, _parse_set(args.set))
    except Exception as exc:  # a clear one-line error for the command line; tests call run_workflow directly
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in outputs:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
