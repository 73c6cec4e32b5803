"""Checkpoints of the long stages (VSD refinement, DMTet fine-tuning): which one a queued run continues, and what
stays on disk.

A run is one checkpoint ``<family>-seed<seed>.pt`` with a small ``.json`` beside it (seed, iterations done, length
asked for, the length its schedules are scaled to). The *family* names everything that makes two runs the same
apart from the seed and the length (the input's content, the prompt, the guidance model, the stage's settings), so:

- an unfinished run of the family is continued whatever seed is queued (the editor's seed control may have
  randomised it between Run, Cancel and Run); a run of the queued seed is preferred;
- a finished run of the queued seed returns at once; asked for more steps, the family's latest finished run
  continues (whatever the seed), its schedules staying those of the length it started with, as threestudio's
  absolute milestones do when a run is resumed longer; the same length with another seed is a new run;
- a finished run keeps only its result (the optimiser moments, two thirds of a checkpoint, are dropped) and what
  its node returned (``<checkpoint>.result.safetensors``: the turntable, the baked mesh; so queueing it again
  returns at once), and at most
  ``keep_unfinished`` unfinished runs stay in a stage's folder, the most recently written first.

Files appear whole or not at all (atomic.py): the .pt is replaced before its .json, so a .json never describes a
checkpoint that is not there."""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import CheckpointMismatch, atomic_write, remove_stale
from .errors import GeoDreamError
from .model_files import read_resume_checkpoint

log = logging.getLogger("GeoDream")


@dataclass
class RunInfo:
    """What the .json beside a checkpoint says. ``step``: iterations done; ``steps``: the length last asked for;
    ``schedule_steps``: the length the run's schedules are scaled to (the one it started with)."""

    family: str
    seed: int
    step: int
    steps: int
    schedule_steps: int
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.step >= self.steps


def info_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".json")


def checkpoint_path(folder: Path, family: str, seed: int) -> Path:
    return Path(folder) / f"{family}-seed{seed}.pt"


def state_bytes(state) -> int:
    """The bytes of every tensor in a (nested) checkpoint state: about the size of its file."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def write(path: Path, state: dict, info: RunInfo) -> None:
    """Write the checkpoint ``state`` (torch.save) and then its .json, each atomically through a temporary of this
    process's own (two processes writing one run never share one; the last to finish wins, whole). A disk without
    room for the new checkpoint beside the previous one is refused before writing, and a disk that fills during the
    write is a GeoDreamError naming the file; the previous checkpoint stays whole either way."""
    info.updated = time.time()
    with atomic_write(path, needed=state_bytes(state)) as tmp:
        with open(tmp, "wb") as f:  # a file object: torch then raises the OSError (e.g. ENOSPC), not its own
            torch.save(state, f)
    with atomic_write(info_path(path)) as tmp:
        tmp.write_text(json.dumps(asdict(info)), encoding="utf-8")


def read_info(path: Path) -> RunInfo | None:
    """The .json of a checkpoint, or None when either file is missing or the .json is not ours."""
    try:
        info = RunInfo(**json.loads(info_path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return info if Path(path).is_file() else None


def load(path: Path, device, checkpoint_format: int) -> dict:
    """A checkpoint's state on ``device``; one of another format is refused by name, never half-loaded."""
    state = read_resume_checkpoint(path, "a GeoDream resume checkpoint", device)
    if state.get("format") != checkpoint_format:
        raise CheckpointMismatch(path)
    return state


@contextmanager
def restoring(path: Path):
    """Around loading a checkpoint's state into a run's modules: a state that does not fit them (a tensor of another
    shape, a missing entry) is one GeoDreamError naming the file, never torch's list from inside load_state_dict."""
    try:
        yield
    except GeoDreamError:
        raise
    except (RuntimeError, KeyError, TypeError, IndexError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GeoDreamError(f"GeoDream: the checkpoint '{path}' does not fit this run ({reason[:300]}); queue "
                            "again with resume off to start over, or delete it.") from None


def runs(folder: Path) -> dict[Path, RunInfo]:
    """Every checkpoint with a readable .json in ``folder``."""
    found = {}
    for meta in sorted(Path(folder).glob("*.json")):
        info = read_info(meta.with_suffix(".pt"))
        if info is not None:
            found[meta.with_suffix(".pt")] = info
    return found


def choose(folder: Path, family: str, seed: int, steps: int) -> tuple[Path, RunInfo] | tuple[None, None]:
    """The run a queued run of ``family`` with ``seed`` and length ``steps`` continues: that seed's own run if there
    is one; else the family's most recently written unfinished run; else its most recent finished run shorter than
    ``steps`` (an extension); else (None, None): a finished run of another seed and the same length is a new run."""
    own = checkpoint_path(folder, family, seed)
    family_runs = {p: i for p, i in runs(folder).items() if i.family == family}
    if own in family_runs:
        return own, family_runs[own]
    for wanted in (lambda i: not i.finished, lambda i: i.step < steps):
        candidates = sorted(((i.updated, p) for p, i in family_runs.items() if wanted(i)), reverse=True)
        if candidates:
            return candidates[0][1], family_runs[candidates[0][1]]
    return None, None


def result_path(checkpoint: Path) -> Path:
    return Path(checkpoint).with_suffix(".result.safetensors")


def keep_result(checkpoint: Path, step: int, tensors: dict[str, torch.Tensor]) -> None:
    """Keep what a run's node returned at ``step`` (named tensors: a refinement's turntable, DMTet's baked mesh)
    beside its checkpoint, atomically, so that the finished run queued again returns it instead of computing it
    again. Nothing is kept beside a checkpoint that was never written (pruning would never remove it)."""
    if not Path(checkpoint).exists():
        return
    with atomic_write(result_path(checkpoint)) as tmp:
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(tmp),
                  metadata={"step": str(int(step))})


def kept_result(checkpoint: Path, step: int) -> dict[str, torch.Tensor] | None:
    """The tensors kept for the run at ``step``; None when there are none, they are of another step (the run went
    on since) or the file is unreadable (then the node computes them again)."""
    try:
        with safe_open(str(result_path(checkpoint)), "pt") as f:
            if (f.metadata() or {}).get("step") != str(step):
                return None
            return {name: f.get_tensor(name) for name in f.keys()}
    except (OSError, RuntimeError, ValueError, SafetensorError):
        return None


def remove(path: Path) -> None:
    """A checkpoint, its .json and its kept result (any may be missing; also the kept preview that earlier versions
    wrote in its place, .preview.safetensors)."""
    for p in (Path(path), info_path(path), result_path(path), Path(path).with_suffix(".preview.safetensors")):
        p.unlink(missing_ok=True)


def prune(folder: Path, keep_unfinished: int, current: Path | None = None, current_unfinished: bool = True
          ) -> list[Path]:
    """Delete the oldest unfinished runs of ``folder`` beyond ``keep_unfinished``. ``current`` (the run in hand) is
    never deleted and counts as one of them when ``current_unfinished``. Finished runs (results) are kept.
    Stale temporaries of killed writers (atomic.remove_stale) go too. Returns the checkpoints deleted."""
    remove_stale(folder)
    others = sorted(((i.updated, p) for p, i in runs(folder).items()
                     if not i.finished and (current is None or p != Path(current))), reverse=True)
    allowed = max(keep_unfinished - (1 if current is not None and current_unfinished else 0), 0)
    removed = [p for _, p in others[allowed:]]
    for path in removed:
        remove(path)
        log.info("GeoDream: removed the unfinished run %s (more than %d kept)", path.name, keep_unfinished)
    return removed


def describe(path: Path, info: RunInfo) -> str:
    """How the node names a resumed run in its log and its preview caption."""
    return f"resumed {path.name} at step {info.step}"
