"""Cancel inside long loops. The host (nodes/host.py: ComfyUI's interrupt, or the runner's flag) installs its
check once; the library's long loops (render chunks, turntable frames, marching-cubes and bake queries) call
``check()`` between pieces of bounded size, so a Cancel lands within one piece, not at the end of a render. The
check raises the host's own exception; a stage that catches it checkpoints before re-raising
(refine_neus.Refinement.run, mesh_finetune.MeshFineTuner.run)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

_check: Callable[[], None] | None = None


def install(check: Callable[[], None] | None) -> None:
    """Make ``check`` (raises to stop; None: no checks) the one called between pieces of work."""
    global _check
    _check = check


def check() -> None:
    """Raise the host's interrupt if the user asked to stop; a no-op when no host installed a check."""
    if _check is not None:
        _check()


def each(pieces: Iterable) -> Iterator:
    """``pieces`` one by one, checking for a Cancel before each."""
    for piece in pieces:
        check()
        yield piece
