"""Resuming long runs as an editor user meets them: Run, Cancel, Run with the seed control on "randomize" continues the
interrupted run; a run extended to more steps keeps the schedules it started with; cancel writes a checkpoint;
finished runs keep their result only and unfinished ones are capped; the same seed reproduces a run on one thread."""
import functools
import inspect
import json
import logging

import pytest
import torch

from geodream_pack.geodream_ops import run_store
from geodream_pack.geodream_ops.refine.refine_neus import Refinement, render_size
from geodream_pack.nodes import host, refine
from geodream_pack.nodes.guidance import SAME
from headless.executor import execute
from headless.run import node_classes
from tests import twins_sd
from tests.neus_doubles import sphere_cost_volume, tiny_settings


def grey_loss(images, cameras, step, total_steps):
    """A stand-in guidance without state: pulls renders to grey (fast, and enough to move every parameter)."""
    return ((images - 0.5) ** 2).mean()


# --- run_store: which run is continued, what is kept --------------------------------------------------------------
def _fake_run(folder, family, seed, step, steps, updated):
    path = run_store.checkpoint_path(folder, family, seed)
    run_store.write(path, {"format": 0}, run_store.RunInfo(family, seed, step, steps, steps))
    info = run_store.read_info(path)
    info.updated = updated  # write() stamps the time; the order is what matters here
    run_store.info_path(path).write_text(json.dumps(info.__dict__))
    return path


def test_choose_prefers_the_seed_then_the_latest_unfinished_then_an_extension(tmp_path):
    old = _fake_run(tmp_path, "fam", 1, 3, 10, updated=1.0)
    new = _fake_run(tmp_path, "fam", 2, 4, 10, updated=2.0)
    done = _fake_run(tmp_path, "fam", 3, 10, 10, updated=3.0)
    _fake_run(tmp_path, "other", 4, 1, 10, updated=4.0)
    assert run_store.choose(tmp_path, "fam", 1, 10)[0] == old  # its own seed, though older
    assert run_store.choose(tmp_path, "fam", 3, 10)[0] == done  # finished: returned as it is
    assert run_store.choose(tmp_path, "fam", 99, 10)[0] == new  # a randomised seed: the latest unfinished run
    run_store.remove(old), run_store.remove(new)
    assert run_store.choose(tmp_path, "fam", 99, 10) == (None, None)  # same length, another seed: a new run
    assert run_store.choose(tmp_path, "fam", 99, 20)[0] == done  # more steps: the finished run is extended
    assert run_store.choose(tmp_path, "nobody", 3, 10) == (None, None)


def test_prune_keeps_the_newest_unfinished_runs_and_every_result(tmp_path):
    paths = [_fake_run(tmp_path, f"f{i}", i, 1, 5, updated=float(i)) for i in range(5)]
    finished = _fake_run(tmp_path, "done", 0, 5, 5, updated=0.0)
    (tmp_path / "legacy.pt").write_bytes(b"not ours")  # no .json: never touched
    # The run in hand (the oldest) counts as one of the two kept and is never deleted.
    removed = run_store.prune(tmp_path, 2, current=paths[0])
    assert sorted(removed) == sorted(paths[1:4])
    assert all(not p.exists() and not run_store.info_path(p).exists() for p in removed)
    assert paths[0].exists() and paths[4].exists() and finished.exists() and (tmp_path / "legacy.pt").exists()
    # Once the run in hand has finished it no longer counts.
    assert run_store.prune(tmp_path, 1, current=paths[0], current_unfinished=False) == []


# --- the refinement loop: extension, results -----------------------------------------------------------------------
def test_an_extended_run_keeps_the_schedules_it_started_with(tmp_path):
    """Interrupted at step 2 of 4, continued to 6: the same numbers as one uninterrupted 6-step run whose schedules
    are scaled to 4 (so at steps 4 and 5 every milestone stays passed)."""
    totals = []

    def recording_loss(images, cameras, step, total_steps):
        totals.append(total_steps)
        return grey_loss(images, cameras, step, total_steps)

    straight = Refinement(sphere_cost_volume(), recording_loss, tiny_settings(steps=6, schedule_steps=4,
                                                                                checkpoint_every=100))
    straight.run()
    assert totals == [4] * 6
    assert [render_size(s, straight.settings) for s in (0, 5)] == [8, 16]

    path = tmp_path / "run.pt"

    def stop_at_two(step, _):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Refinement(sphere_cost_volume(), grey_loss, tiny_settings(steps=4, checkpoint_every=100), "cpu", path,
                   "fam").run(stop_at_two)
    assert run_store.read_info(path) == run_store.RunInfo("fam", 0, 2, 4, 4, run_store.read_info(path).updated)
    longer = Refinement(sphere_cost_volume(), grey_loss, tiny_settings(steps=6, checkpoint_every=100), "cpu", path,
                        "fam")
    assert longer.step == 2 and longer.settings.schedule_length == 4
    longer.run()
    for (name, a), b in zip(straight.field.state_dict().items(), longer.field.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # Finished: the result stays, the optimiser moments go; continuing it again starts them afresh.
    state = torch.load(path, weights_only=True)
    assert state["step"] == 6 and "optimizer" not in state and run_store.read_info(path).finished
    more = Refinement(sphere_cost_volume(), grey_loss, tiny_settings(steps=7, checkpoint_every=100), "cpu", path)
    torch.testing.assert_close(more.field.volume, straight.field.volume, rtol=0, atol=0)
    more.run()
    assert more.step == 7 and not torch.equal(more.field.volume, straight.field.volume)


# --- the node in a queued graph -----------------------------------------------------------------------------------
class StandInCostVolume:
    """A graph's cost volume without the prior stage (its own tests cover it)."""

    RETURN_TYPES = ("GEODREAM_COST_VOLUME",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def make(self):
        return (sphere_cost_volume(),)


@pytest.fixture
def graph(pack_dirs, monkeypatch):
    """Cost volume -> VSD refinement (guidance from the real loader on the SD twin, the loss a stand-in) -> Save
    Field, queued through the headless executor as ComfyUI would run it."""
    small = functools.partial(tiny_settings)
    small.steps = refine.RefineSettings.steps  # INPUT_TYPES reads the class's default, as the executor validates
    monkeypatch.setattr(refine, "RefineSettings", small)
    monkeypatch.setattr(refine, "make_guidance_fn", lambda *args, **kwargs: grey_loss)
    twins_sd.save_diffusers_folder(pack_dirs["models"] / "diffusers" / "sd21-base-twin")
    classes = {**node_classes(), "StandInCostVolume": StandInCostVolume}

    def queue(**inputs):
        refine_inputs = dict(cost_volume=["1", 0], guidance=["2", 0], prompt="a red ball", steps=5, resolution=32,
                             seed=11, preview_every=0, resume=True, checkpoint_every=100)
        refine_inputs.update(inputs)
        api = {"1": {"class_type": "StandInCostVolume", "inputs": {}},
               "2": {"class_type": "GeoDreamLoadVSDGuidance",
                     "inputs": {"model": "diffusers/sd21-base-twin", "lora_model": SAME, "precision": "auto"}},
               "3": {"class_type": "GeoDreamVSDRefineNeuS", "inputs": refine_inputs},
               "4": {"class_type": "GeoDreamSaveField", "inputs": {"field": ["3", 0], "filename_prefix": "f"}}}
        return execute(api, classes, log=lambda line: None)["3"][0]

    return queue


def _steps_and_notes(monkeypatch):
    """Steps the node reports and the (note, step) of each preview it sends to the editor."""
    steps, previews = [], []
    update = host.Progress.update

    def record(bar, value=None, preview=None):
        steps.append(value)
        if preview is not None:
            previews.append((bar.note, value))
        update(bar, value, preview)

    monkeypatch.setattr(host.Progress, "update", record)
    return steps, previews


def test_randomized_seed_after_cancel_resumes_the_interrupted_run(graph, pack_dirs, monkeypatch, caplog):
    """Run, Cancel at step 3 (between checkpoints: cancel writes one), Run again with the seed the editor's
    "randomize" control put in: the interrupted run continues from step 3 with its own seed, says so in the log and
    the preview caption, and ends exactly where an uninterrupted run of that seed ends."""
    folder = pack_dirs["output"] / "GeoDream" / "refine"
    steps, previews = _steps_and_notes(monkeypatch)
    check = host.check_interrupt
    monkeypatch.setattr(host, "check_interrupt", lambda: (steps[-1] == 3 and host.request_interrupt(), check()))
    with pytest.raises(host.Interrupted):
        graph(seed=11)
    (checkpoint,) = folder.glob("*.pt")
    assert checkpoint.name.endswith("-seed11.pt") and torch.load(checkpoint, weights_only=True)["step"] == 3

    monkeypatch.setattr(host, "check_interrupt", check)
    steps.clear()
    with caplog.at_level(logging.INFO, logger="GeoDream"):
        resumed = graph(seed=424242, preview_every=100)
    assert steps == [3, 4, 5]  # announced at step 3, then only the two steps left
    note = f"resumed {checkpoint.name} at step 3 (its seed 11, not 424242: resume off starts 424242)"
    assert previews == [(note, 3)]  # the caption of the preview sent on resuming
    assert note in caplog.text
    assert [p.name for p in folder.glob("*.pt")] == [checkpoint.name] and run_store.read_info(checkpoint).finished

    straight = graph(seed=11, resume=False)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)  # one thread: the same seed, the same run


def test_more_steps_extend_the_finished_run_and_unfinished_runs_are_capped(graph, pack_dirs, monkeypatch):
    folder = pack_dirs["output"] / "GeoDream" / "refine"
    graph(steps=2, seed=1)
    steps, _ = _steps_and_notes(monkeypatch)
    graph(steps=4, seed=2)  # a randomised seed and more steps: the same run, extended
    assert steps == [2, 3, 4] and [p.name[-9:] for p in folder.glob("*.pt")] == ["-seed1.pt"]

    check = host.check_interrupt
    monkeypatch.setattr(host, "check_interrupt", lambda: (host.request_interrupt(), check()))
    for prompt in ("a", "b", "c"):  # three other inputs, each cancelled after its first step
        with pytest.raises(host.Interrupted):
            graph(prompt=prompt, keep_unfinished_runs=2)
    kept = {p: run_store.read_info(p) for p in folder.glob("*.pt")}
    assert len(kept) == 3 and sum(not info.finished for info in kept.values()) == 2  # b and c, and the result
    assert all("optimizer" not in torch.load(p, weights_only=True) for p, i in kept.items() if i.finished)


def test_workflows_saved_before_keep_unfinished_runs_still_load():
    """The new input is appended: a workflow saved without it maps every value to the same input as before, and the
    node fills in the default."""
    from headless import workflow
    from headless.pack import PACK_ROOT
    from geodream_pack.nodes import resume

    classes = node_classes()
    saved = workflow.load(PACK_ROOT / "example_workflows" / "text_to_3d_mvdream.json")  # as shipped before
    api = workflow.ui_to_api(saved, classes)
    for node_type, old_names in (
            ("GeoDreamVSDRefineNeuS", ["prompt", "steps", "resolution", "seed", "preview_every", "resume",
                                       "checkpoint_every"]),
            ("GeoDreamDMTetFineTune", ["prompt", "tet_resolution", "geometry_steps", "texture_steps", "render_size",
                                       "seed", "preview_every", "resume", "geometry_batch", "texture_size"])):
        (node,) = [n for n in saved["nodes"] if n["type"] == node_type]
        values = [v for v in node["widgets_values"] if v not in ("fixed", "randomize")]
        (inputs,) = [n["inputs"] for n in api.values() if n["class_type"] == node_type]
        assert {k: inputs[k] for k in old_names} == dict(zip(old_names, values))
        assert "keep_unfinished_runs" not in inputs
        names = [name for name, _ in workflow.widget_names(classes[node_type])]
        assert names[:len(old_names) + 1] == old_names + ["keep_unfinished_runs"]
        function = getattr(classes[node_type], classes[node_type].FUNCTION)
        default = inspect.signature(function).parameters["keep_unfinished_runs"].default
        assert default == resume.KEEP_UNFINISHED_RUNS == resume.RETENTION_INPUT[1]["default"]
