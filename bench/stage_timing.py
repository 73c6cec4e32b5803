"""Helpers the bench scripts share: splitting a refinement step's time between rendering and guidance, another
revision of the pack to compare with, this process's memory, and replacing one section of bench/RESULTS.md (every
bench script's --write)."""
from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PACK_ROOT = Path(__file__).resolve().parent.parent


def timed_guidance(fn, sync=lambda: None):
    """Wrap ``fn(images, cameras, step, total) -> loss`` so that ``spent["guidance"]`` accumulates the seconds spent
    in it and in its backward down to the images (VAE, UNet calls, the LoRA's step); the rest of a step renders.
    ``sync`` waits for the device (CUDA) before each clock reading. Returns (wrapped fn, spent)."""
    spent = {"guidance": 0.0}

    class Marker(torch.autograd.Function):
        """Identity whose backward marks when the guidance's gradient has reached the render."""

        @staticmethod
        def forward(ctx, images):
            return images.view_as(images)

        @staticmethod
        def backward(ctx, grad):
            sync()
            spent["guidance"] += time.perf_counter() - spent.pop("backward_from")
            return grad

    def wrapped(images, cameras, step, total):
        sync()
        start = time.perf_counter()
        loss = fn(Marker.apply(images), cameras, step, total)
        sync()
        spent["guidance"] += time.perf_counter() - start
        spent["backward_from"] = time.perf_counter()
        return loss

    return wrapped, spent


def rss_mb() -> float:
    """This process's resident memory now, in MiB (Linux /proc)."""
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (getrusage's ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export(revision: str) -> Path:
    """The pack as it was at ``revision`` (git archive), in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"geodream-{revision}-"))
    archive = subprocess.run(["git", "-C", str(PACK_ROOT), "archive", revision], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def write_section(text: str, path: Path, section: str) -> None:
    """Replace the ``section`` heading's section of ``path`` with ``text`` in place (or append it), atomically."""
    if str(PACK_ROOT) not in sys.path:
        sys.path.insert(0, str(PACK_ROOT))
    from headless.pack import load_pack

    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if section in current:
        head, _, rest = current.partition(section)
        tail = rest[rest.find("\n## ") + 1:] if "\n## " in rest else ""
        current = head + text + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    with load_pack().geodream_ops.atomic.atomic_write(path) as tmp:
        tmp.write_text(current, encoding="utf-8")
