"""Tests import the pack the way ComfyUI does (by path, as the package ``geodream_pack``); there is deliberately no
tests/__init__.py pulling the root in. Model, input and output folders point into a per-test temporary folder."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the headless runner, a top-level package of its own

import torch  # noqa: E402

from headless.pack import load_pack  # noqa: E402

load_pack()
# Tiny models: thread start-up costs more than it saves on CI's two shared cores (and spconv's CPU build is only
# deterministic on one thread).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def pack_dirs(tmp_path, monkeypatch):
    """Fresh models/, input/, output/ and temp/ folders for every test, as the host module reads them outside
    ComfyUI."""
    dirs = {name: tmp_path / name for name in ("models", "input", "output", "temp")}
    for name, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(f"GEODREAM_{name.upper()}_DIR", str(path))
    monkeypatch.setenv("GEODREAM_DEVICE", "cpu")
    return dirs
