"""The refinement loop: it learns with a stand-in loss, resumes exactly, skips non-finite steps, and follows the
release's schedules."""
import math

import pytest
import torch

from geodream_pack.geodream_ops.refine.neus_renderer import render
from geodream_pack.geodream_ops.refine.refine_neus import (NonFiniteError, Refinement, RefineSettings, lr_factor,
                                                    regularisers, render_size)
from geodream_pack.geodream_ops.guidance.score_distillation import DistillSettings, make_guidance_fn
from geodream_pack.geodream_ops.guidance.sd_guidance import load_guidance
from tests import twins_sd
from tests.neus_doubles import sphere_cost_volume, tiny_settings


class TargetSphere(torch.nn.Module):
    """What the stand-in loss asks for: a red sphere of radius 0.35 (the field starts at 0.5)."""

    bbox = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    inv_s = torch.tensor(60.0)

    def sdf(self, points):
        return points.norm(dim=-1) - 0.35

    def sdf_and_gradient(self, points, create_graph):
        return self.sdf(points), torch.nn.functional.normalize(points, dim=-1)

    def color(self, points):
        return torch.tensor([0.9, 0.1, 0.1]).expand(points.shape[0], 3)

    def background(self, dirs):
        return torch.ones_like(dirs)


def test_wiring_learns_an_image_matching_loss():
    """The loss asks for the target's foreground over the field's own background, so only V (shape), the hash
    grid and the MLP (colour) can lower it. Learning rates x10 so that 100 steps move the release's groups."""
    settings = tiny_settings(steps=100, resolution=12, lambda_sparsity=0.0, lambda_opaque=0.0,
                             background_aug_prob=0.0, checkpoint_every=10 ** 9)
    settings.field.variance_init = 0.5  # inv_s ~ 150: a crisp surface at this tiny size
    settings.lr = {k: 10 * v for k, v in settings.lr.items()}
    target, losses = TargetSphere(), []

    def match(images, cameras, step, total):
        target.background = lambda dirs: run.field.background(dirs).detach()
        goal = render(target, cameras, images.shape[2], images.shape[3], settings.render)["rgb"].permute(0, 3, 1, 2)
        loss = ((images - goal) ** 2).mean()
        losses.append(float(loss.detach()))
        return loss

    run = Refinement(sphere_cost_volume(), match, settings)
    axes = 0.45 * torch.eye(3)
    assert (run.field.sdf(axes) < 0).all()  # inside the initial radius-0.5 sphere
    start = {k: v.detach().clone() for k, v in run.field.named_parameters()}
    run.run()
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.1 * first, (first, last)
    for name in ("volume", "texture.encoding.params", "texture.network.0.weight"):
        assert not torch.equal(start[name], dict(run.field.named_parameters())[name]), name
    assert (run.field.sdf(axes) > 0).all()  # the surface moved inside radius 0.45, towards the target's 0.35


class Stop(Exception):
    pass


def test_resume_equals_uninterrupted(tmp_path):
    twins_sd.save_diffusers_folder(tmp_path / "sd")
    guidance = load_guidance(tmp_path / "sd")
    settings = tiny_settings(steps=4, checkpoint_every=2)

    def fresh(path):
        return Refinement(sphere_cost_volume(), make_guidance_fn(guidance, "a red ball", seed=1), settings,
                          checkpoint_path=path)

    straight = fresh(None)
    straight.run()

    def interrupt(step, _):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        fresh(tmp_path / "run.pt").run(interrupt)
    resumed = fresh(tmp_path / "run.pt")
    assert resumed.step == 3  # stopped after step 3 (between checkpoints): that step was checkpointed on the way out
    resumed.run()
    for (name, a), b in zip(straight.field.state_dict().items(), resumed.field.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for a, b in zip(straight.guidance_fn.lora.parameters(), resumed.guidance_fn.lora.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert straight.guidance_fn.lora.camera_embedding.linear_1.weight.grad is not None


def test_non_finite_steps_are_skipped_then_stop():
    calls = []

    def flaky(images, cameras, step, total):
        calls.append(step)
        bad = step in (1, 2) or step >= 4
        return images.mean() * (float("nan") if bad else 1.0)

    run = Refinement(sphere_cost_volume(), flaky, tiny_settings(steps=10, max_bad_steps=3, checkpoint_every=10 ** 9))
    run.train_step()
    after_good = run.field.texture.encoding.params.detach().clone()
    run.train_step()
    run.train_step()
    assert run.skipped == 2 and torch.equal(after_good, run.field.texture.encoding.params)
    run.train_step()  # a good one resets the run of bad steps
    assert run.bad_run == 0
    with pytest.raises(NonFiniteError, match="in a row"):
        run.run()
    assert run.skipped == 5 and run.step == 6  # steps 4, 5, 6 were the run of three


def test_schedules_follow_the_release():
    """geodream-neus.yaml, 60,000 Lightning steps = 20,000 iterations of three optimiser steps: each milestone at the
    first iteration i whose Lightning step 3 i reaches it; the LR schedulers stepped once per iteration."""
    s = RefineSettings()
    assert s.steps == 20000
    assert render_size(999, s) == 256 and render_size(1000, s) == 512  # resolution_milestones [3000]
    sparsity = s.lambda_sparsity * (0.25 + 0.01) ** 0.5
    half = torch.full((1, 4, 4, 1), 0.5)
    assert float(regularisers(half, 3333, s)) == pytest.approx(sparsity)  # lambda_opaque [10000, 0, 1000, 10001]
    assert float(regularisers(half, 3334, s)) == pytest.approx(sparsity + 1000 * math.log(2), rel=1e-5)
    distill = DistillSettings()
    top = {step: distill.max_step_percent_annealed if step >= distill.anneal_at_fraction * s.steps
           else distill.max_step_percent for step in (5000, 5001)}
    assert top == {5000: 0.98, 5001: 0.5}  # max_step_percent [15000, 0.98, 0.5, 15001]
    assert lr_factor("volume", 3499, s) == 1.0 and lr_factor("volume", 3500, s) == pytest.approx(0.1)
    assert lr_factor("hash_grid", 3499, s) == 1.0 and lr_factor("hash_grid", 3500, s) == 1.0
    assert lr_factor("hash_grid", 20000, s) == pytest.approx(1 - 0.95 * 16500 / 20000)
    assert lr_factor("volume", 20000, s) == pytest.approx(0.1 + 0.9 * 16500 / 20000)
    assert lr_factor("background", 20000, s) == 1.0
    short = RefineSettings(steps=2000)  # a shorter run keeps the milestones at the same fraction
    assert render_size(99, short) == 256 and render_size(100, short) == 512
    assert lr_factor("volume", 349, short) == 1.0 and lr_factor("volume", 350, short) == pytest.approx(0.1)


def test_the_deviation_stays_at_the_prior_value():
    """The release registers NeuS's deviation without gradient: no optimiser group holds it and a run leaves it."""
    run = Refinement(sphere_cost_volume(), lambda images, *a: images.mean(), tiny_settings(steps=3))
    before = float(run.field.variance)
    assert not run.field.variance.requires_grad
    assert all(p is not run.field.variance for g in run.optimizer.param_groups for p in g["params"])
    run.run()
    assert float(run.field.variance) == before == pytest.approx(0.3)


def test_a_checkpoint_of_another_layout_is_refused_by_name(tmp_path):
    """A checkpoint written by another version of the pack is never half-loaded: the error names it and the fix."""
    from geodream_pack.geodream_ops.atomic import CheckpointMismatch

    path = tmp_path / "old.pt"
    torch.save({"step": 3, "field": {"encoding.params": torch.zeros(4)}}, path)
    with pytest.raises(CheckpointMismatch, match=r"old\.pt was written by another version.*resume off"):
        Refinement(sphere_cost_volume(), lambda *a: torch.zeros(()), tiny_settings(), torch.device("cpu"), path)


def test_the_field_trains_a_copy_of_the_input_volume():
    """ComfyUI runs nodes under inference mode and caches their outputs: a cost volume made there (channels-last
    float32, as the field keeps V) becomes the field's own parameter, and training never writes into the input."""
    with torch.inference_mode():
        cost_volume = sphere_cost_volume()
        cost_volume.volume = torch.randn(1, 4, 8, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    before = cost_volume.volume.clone()
    settings = tiny_settings(steps=2, resolution=8, checkpoint_every=10 ** 9)
    settings.lr = {k: 10 * v for k, v in settings.lr.items()}

    def pull(images, cameras, step, total):
        return images.mean()

    run = Refinement(cost_volume, pull, settings)
    run.run()
    assert not torch.equal(run.field.volume.detach(), before)  # V was trained
    assert torch.equal(cost_volume.volume, before)  # the input was not
