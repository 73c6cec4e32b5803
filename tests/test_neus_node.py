"""The VSD refinement node end to end on CPU: tiny SD twins through the loader node, a handful of steps,
checkpoint-resume through the output folder, interrupt, saving the field."""
import pytest
import torch
from safetensors.torch import load_file

from geodream_pack.geodream_ops.refine.neus_field import NeuSField
from geodream_pack.nodes import host, refine
from geodream_pack.nodes.guidance import SAME, GeoDreamLoadVSDGuidance
from geodream_pack.nodes.refine import GeoDreamLoadField, GeoDreamSaveField, GeoDreamVSDRefineNeuS
from tests import twins_sd
from tests.neus_doubles import sphere_cost_volume, tiny_settings


@pytest.fixture(autouse=True)
def tiny_field(monkeypatch):
    """The release's 2^19 x 16-level table (12.6M parameters, ~150 MB per checkpoint) is too big for CI; the node
    builds the same objects with a small one."""
    monkeypatch.setattr(refine, "RefineSettings", tiny_settings)


@pytest.fixture
def guidance(pack_dirs):
    twins_sd.save_diffusers_folder(pack_dirs["models"] / "diffusers" / "sd21-base-twin")
    assert "diffusers/sd21-base-twin" in GeoDreamLoadVSDGuidance.INPUT_TYPES()["required"]["model"][0]
    return GeoDreamLoadVSDGuidance().load("diffusers/sd21-base-twin", SAME, "auto")[0]


def _refine(guidance, **overrides):
    args = dict(cost_volume=sphere_cost_volume(), guidance=guidance, prompt="a red ball", steps=3, resolution=32,
                seed=7, preview_every=2, resume=True, checkpoint_every=1)
    args.update(overrides)
    return GeoDreamVSDRefineNeuS().refine(**args)


def test_node_runs_resumes_and_saves(guidance, pack_dirs, monkeypatch):
    previews = []
    update = host.Progress.update

    def record(bar, value=None, preview=None):
        if preview is not None:
            previews.append((value, preview.size))
        update(bar, value, preview)

    monkeypatch.setattr(host.Progress, "update", record)
    field, frames = _refine(guidance)
    assert isinstance(field, NeuSField)
    assert frames.shape == (8, 32, 32, 3) and 0 <= frames.min() and frames.max() <= 1
    # Every preview_every steps, to the node's live preview, at the step's render size (under 128 px here).
    assert previews == [(2, (32, 32))]
    checkpoints = list((pack_dirs["output"] / "GeoDream" / "refine").glob("*.pt"))
    assert len(checkpoints) == 1 and torch.load(checkpoints[0], weights_only=True)["step"] == 3

    # The same inputs again: the finished checkpoint is picked up, no step runs and nothing is rendered: the
    # turntable kept with the run comes back as it was.
    monkeypatch.setattr(host, "check_interrupt", lambda: pytest.fail("a finished run must not step again"))
    monkeypatch.setattr(refine, "turntable", lambda *a, **k: pytest.fail("a finished run must not render again"))
    monkeypatch.setattr(refine, "render", lambda *a, **k: pytest.fail("a finished run must not render again"))
    again, frames_again = _refine(guidance)
    torch.testing.assert_close(again.volume, field.volume, rtol=0, atol=0)
    torch.testing.assert_close(frames_again, frames, rtol=0, atol=0)

    ui = GeoDreamSaveField().save(field, "GeoDream/field")["ui"]["files"]
    saved = load_file(pack_dirs["output"] / "GeoDream" / ui[0]["filename"])
    torch.testing.assert_close(saved["volume"], field.volume.detach())
    choice = f"GeoDream/{ui[0]['filename']}"
    assert GeoDreamLoadField.INPUT_TYPES()["required"]["field_file"][0] == [choice]
    (loaded,) = GeoDreamLoadField().load(sphere_cost_volume(), choice)
    points = torch.rand(20, 3) * 2 - 1
    torch.testing.assert_close(loaded.sdf(points), field.sdf(points))
    torch.testing.assert_close(loaded.color(points), field.color(points))


def test_interrupt_keeps_the_last_checkpoint_and_rerun_resumes(guidance, pack_dirs, monkeypatch):
    steps_seen = []

    def interrupt_at_step_two():
        steps_seen.append(len(steps_seen) + 1)
        if steps_seen == [1, 2]:
            raise host.Interrupted("stop")

    monkeypatch.setattr(host, "check_interrupt", interrupt_at_step_two)
    with pytest.raises(host.Interrupted):
        _refine(guidance, seed=8, preview_every=0)
    (checkpoint,) = (pack_dirs["output"] / "GeoDream" / "refine").glob("*.pt")
    assert torch.load(checkpoint, weights_only=True)["step"] == 2
    steps_seen.clear()
    _refine(guidance, seed=8, preview_every=0)
    assert steps_seen == [1]  # only the third step ran
    assert torch.load(checkpoint, weights_only=True)["step"] == 3


def test_clear_errors(guidance):
    with pytest.raises(ValueError, match="prompt is empty"):
        _refine(guidance, prompt="  ")
    with pytest.raises(TypeError, match="Build Cost Volume, Load Cost Volume or Start Volume"):
        _refine(guidance, cost_volume=torch.zeros(1))
    with pytest.raises(FileNotFoundError, match="models/diffusers"):
        GeoDreamLoadVSDGuidance().load("diffusers/missing", SAME, "auto")
    with pytest.raises(FileNotFoundError, match="not a saved field"):
        GeoDreamLoadField().load(sphere_cost_volume(), "../elsewhere.safetensors")
