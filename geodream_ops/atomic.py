"""Files appear whole or not at all: a crash or an interrupt never leaves a half-written checkpoint or mesh; and a
checkpoint of another layout is refused by name rather than half-loaded."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import GeoDreamError


class CheckpointMismatch(GeoDreamError, RuntimeError):
    def __init__(self, path):
        super().__init__(f"GeoDream: {path} was written by another version of the pack and cannot be resumed; "
                         "delete it, or queue again with resume off to start over.")


@contextmanager
def atomic_write(path):
    """Yield a temporary path beside ``path`` (same suffix, so writers that go by extension still work);
    it replaces ``path`` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".partial-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
