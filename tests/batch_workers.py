"""Ray worker setup for tests/test_batch.py (run by Ray in every worker process before its first job):
- the tiny Uni3D twin's size and CLIP config, registered as the test process registers them;
- the injected fault: with $GEODREAM_TEST_KILL_JOB set, the worker process of that job dies (os._exit, as a crash or
  an OOM kill would end it) right after the refinement checkpoint of step $GEODREAM_TEST_KILL_STEP, on the job's
  first attempt only, so the retry must resume from that checkpoint."""
import os
from pathlib import Path

from headless.pack import load_pack

KILL_JOB, KILL_STEP, CLIP_CONFIGS = "GEODREAM_TEST_KILL_JOB", "GEODREAM_TEST_KILL_STEP", "GEODREAM_TEST_CLIP_CONFIGS"


def setup() -> None:
    pack = load_pack()
    from tests import twins_uni3d

    twins_uni3d.uni3d.SIZES[twins_uni3d.TWIN_SIZE] = twins_uni3d.TWIN_CONFIG
    twins_uni3d.register_twin_clip(Path(os.environ[CLIP_CONFIGS]))
    if os.environ.get(KILL_JOB):
        refinement = pack.geodream_ops.refine.refine_neus.Refinement
        refinement.save_checkpoint = _dying_after(refinement.save_checkpoint)


def _dying_after(save_checkpoint):
    def save_then_die(self):
        save_checkpoint(self)
        folder = Path(os.environ["GEODREAM_OUTPUT_DIR"])  # the job's folder, set by headless.batch_job
        first_attempt = (folder / "attempts").read_text() == "1"
        if folder.name == os.environ[KILL_JOB] and self.step == int(os.environ[KILL_STEP]) and first_attempt:
            os._exit(1)
    return save_then_die
