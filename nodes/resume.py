"""What the two long nodes (VSD refinement, DMTet fine-tuning) share about resuming: which checkpoint a queued run
continues (geodream_ops/run_store.py), how it is announced, and the inputs and tooltips that explain it."""
import logging

from ..geodream_ops import run_store

log = logging.getLogger("GeoDream")

KEEP_UNFINISHED_RUNS = 2
RESUME_TOOLTIP = ("Continue from its checkpoint an unfinished run of these inputs (whatever the seed), or the latest "
                  "finished one when more steps are asked for; a finished run of this seed and length returns at "
                  "once. Off starts this seed over.")
RETENTION_INPUT = ("INT", {"default": KEEP_UNFINISHED_RUNS, "min": 1, "max": 100, "tooltip":
                           "Unfinished (interrupted) runs kept in this stage's checkpoint folder, newest first; older "
                           "ones are deleted when a run starts or ends. A finished run keeps only its result."})


SEED_CONTROL_NOTE = ("Its 'control after generate' starts on fixed in nodes made from the library (GeoDream's "
                     "editor extension), so Run, Cancel, Run continues the same run; randomize, or another seed, "
                     "makes a new object")


def seed_tooltip(seeds_what: str, upstream: bool = False) -> str:
    """The seed widget's promise, exactly as far as it holds (README, 'Resuming and disk use'). ``upstream``: the
    seed shapes what the long stages are named after (views, hence the cost volume), so changing it starts them
    over; otherwise an unfinished run of the same inputs is continued whatever it says."""
    promise = (f"Seeds {seeds_what}. The same seed reproduces a run bit for bit on one CPU thread; with more threads "
               "(ComfyUI's default) or on a GPU, summation order makes two runs differ slightly. ")
    if upstream:
        return promise + (f"Another seed gives other views, so refinement and the mesh stage start over. "
                          f"{SEED_CONTROL_NOTE} (and starts both long stages from step 0).")
    return promise + ("An unfinished run of the same inputs is continued with its own seed whatever this says; turn "
                      f"resume off to start this seed instead. {SEED_CONTROL_NOTE} once this run has finished.")


def seed_input(seeds_what: str, maximum: int, upstream: bool = False) -> tuple:
    """A seed widget: INT with its control widget declared (not left to the frontend's 'seed' name rule)."""
    return ("INT", {"default": 0, "min": 0, "max": maximum, "control_after_generate": True,
                    "tooltip": seed_tooltip(seeds_what, upstream)})


def plan(folder, family: str, seed: int, steps: int, resume: bool) -> tuple:
    """(checkpoint path, seed, steps, note) of the run to do: the run run_store.choose finds, with its own seed and
    at least the steps it has done, or a new run of ``seed`` (resume off deletes that seed's checkpoint). ``note``
    names a resumed checkpoint for the log and the preview caption; '' for a new run."""
    new = run_store.checkpoint_path(folder, family, seed)
    if not resume:
        run_store.remove(new)
        return new, seed, steps, ""
    path, info = run_store.choose(folder, family, seed, steps)
    if info is None:
        return new, seed, steps, ""
    note = run_store.describe(path, info)
    if info.seed != seed:
        note += f" (its seed {info.seed}, not {seed}: resume off starts {seed})"
    if info.step > steps:
        note += f"; it has done more than the {steps} steps asked, so it is returned as it is"
    log.info("GeoDream: %s", note)
    return path, info.seed, max(steps, info.step), note
