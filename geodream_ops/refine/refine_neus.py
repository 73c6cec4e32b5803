"""Stage 3: refine the prior's NeuS field with score distillation (the release's geodream-neus.yaml).

Schedules are written in the release's units and scaled to the run length. The release (its current config, the
first said 25,010 steps and elevation -60..10) steps three optimisers by hand under Lightning, whose global step
counts optimiser steps, so its ``max_steps: 60000`` is 20,000 iterations and its step-based milestones fall where
3 x iteration reaches them: 256 -> 512 px at 3,000 (iteration 1,000), the opacity loss at 10,001 (its ramp
[10000, 0, 1000, 10001]; iteration 3,334) and t_max annealed at 15,001 (iteration 5,001). Its LR schedulers are
stepped once per iteration: warm-up 3,500 iterations, then linear over 20,000 iterations, so the run ends 82.5% into
the ramp (hash grid/MLP factor 1 -> 0.216, volume 0.1 -> 0.8425). Shorter runs keep every milestone at the same
fraction of the run.

Resumable: a checkpoint (field, optimiser, guidance/LoRA state, random state, step) is written atomically every
``checkpoint_every`` steps and when the run is stopped (run_store.py); running again with the same checkpoint path
continues from it, also to a greater length: the schedules stay scaled to the length the run started with
(``schedule_steps``), so every milestone passed stays passed and the LR ramp carries on, as threestudio's absolute
milestones do when a run is resumed with more steps. A finished run's checkpoint keeps the result only (no
optimiser moments); continuing it starts the moments afresh."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field as dc_field, replace
from pathlib import Path

import torch

from .. import run_store
from ..cameras import CameraSampler, Cameras, scene_unit
from ..prior.cost_volume import CostVolume
from ..errors import GeoDreamError
from .neus_field import FieldSettings, NeuSField
from .neus_renderer import RenderSettings, render, render_with_loss
from .occupancy_grid import UPDATE_EVERY

log = logging.getLogger("GeoDream")

CHECKPOINT_FORMAT = 4  # bump when the checkpoint's layout changes: older files are then refused, never misread
RELEASE_OPTIMISER_STEPS = 60000  # geodream-neus.yaml trainer.max_steps, in Lightning's optimiser steps
RELEASE_ITERATIONS = RELEASE_OPTIMISER_STEPS // 3  # three optimisers per iteration


@dataclass
class RefineSettings:
    steps: int = round(RELEASE_ITERATIONS)
    resolution: int = 512  # the final render size; the first 12% of the run renders at half of it
    batch_size: int = 1
    half_resolution_until: float = 3000 / RELEASE_OPTIMISER_STEPS  # data.resolution_milestones
    # NeuS's deviation is not here: the release registers it without gradient (frozen at the prior's value).
    lr: dict = dc_field(default_factory=lambda: {"volume": 1e-3, "hash_grid": 5e-3, "color_mlp": 5e-4,
                                                 "background": 1e-3})
    warmup_iterations: float = 3500  # release iterations, scaled to the run
    ramp_iterations: float = 20000
    lambda_sparsity: float = 10.0
    lambda_opaque: float = 1000.0
    opaque_from: float = 10001 / RELEASE_OPTIMISER_STEPS  # lambda_opaque [10000, 0, 1000, 10001]
    background_aug_prob: float = 0.5  # random solid backgrounds, so colour cannot hide in the environment map
    checkpoint_every: int = 500
    max_bad_steps: int = 20  # consecutive non-finite steps before giving up
    seed: int = 0
    schedule_steps: int = 0  # the length the schedules are scaled to; 0: ``steps`` (a resumed run keeps its own)
    field: FieldSettings = dc_field(default_factory=FieldSettings)
    render: RenderSettings = dc_field(default_factory=RenderSettings)
    cameras: CameraSampler = dc_field(default_factory=CameraSampler)

    @property
    def schedule_length(self) -> int:
        return self.schedule_steps or self.steps


class NonFiniteError(GeoDreamError, RuntimeError):
    pass


def lr_factor(group: str, step: int, settings: RefineSettings) -> float:
    """The release's SequentialLR(ConstantLR, LinearLR) per group, in iterations scaled to this run."""
    release_iter = step * RELEASE_ITERATIONS / settings.schedule_length
    if release_iter < settings.warmup_iterations or group not in ("volume", "hash_grid", "color_mlp"):
        return 1.0
    ramp = min(release_iter - settings.warmup_iterations, settings.ramp_iterations) / settings.ramp_iterations
    if group == "volume":
        return 0.1 + 0.9 * ramp
    return 1.0 - 0.95 * ramp


def render_size(step: int, settings: RefineSettings) -> int:
    return settings.resolution // 2 if step < settings.half_resolution_until * settings.schedule_length else settings.resolution


def regularisers(opacity: torch.Tensor, step: int, settings: RefineSettings) -> torch.Tensor:
    """Sparsity (a smooth L1 on opacity) always; from 1/6 of the run, an entropy push towards 0 or 1."""
    loss = settings.lambda_sparsity * (opacity ** 2 + 0.01).sqrt().mean()
    if step >= settings.opaque_from * settings.schedule_length:
        o = opacity.clamp(1e-3, 1 - 1e-3)
        loss = loss + settings.lambda_opaque * -(o * o.log() + (1 - o) * (1 - o).log()).mean()
    return loss


def evaluation_cameras(field: NeuSField, azimuths) -> Cameras:
    """The release's evaluation camera at each azimuth: 1.25 scene units away, fovy 50, 15 deg above the horizon."""
    return Cameras.from_spherical(15.0, azimuths, 1.25 * scene_unit(field.bbox), 50.0, "turntable")


def turntable(field: NeuSField, views: int = 8, size: int = 128, settings: RenderSettings | None = None) -> torch.Tensor:
    """IMAGE [views, size, size, 3] around the object from the evaluation cameras, over the field's own background."""
    cameras = evaluation_cameras(field, torch.arange(views) * 360.0 / views)
    settings = settings or RenderSettings()
    frames = [render(field, cameras[i], size, size, settings)["rgb"] for i in range(views)]
    return torch.cat(frames).clamp(0, 1).cpu()


class Refinement:
    """One refinement run. ``guidance_fn(images [B,3,H,W], cameras, step, total_steps) -> loss`` (with
    ``state_dict``/``load_state_dict`` when it has state of its own, as score_distillation's does)."""

    def __init__(self, cost_volume: CostVolume, guidance_fn, settings: RefineSettings, device="cpu",
                 checkpoint_path: Path | None = None, family: str = ""):
        """``family`` names the run's inputs apart from seed and length in the checkpoint's .json (run_store)."""
        self.settings, self.guidance_fn, self.family = settings, guidance_fn, family
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):  # the fresh hash grid and MLPs start from the seed
            torch.manual_seed(settings.seed)
            self.field = NeuSField(cost_volume, settings.field).to(self.device)
        groups = self.field.param_groups()
        self.optimizer = torch.optim.AdamW([{"params": groups[name], "lr": lr, "name": name}
                                            for name, lr in settings.lr.items()], betas=(0.9, 0.99), eps=1e-15)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step, self.skipped, self.bad_run = 0, 0, 0
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path else None
        if self.checkpoint_path and self.checkpoint_path.exists():
            self.load_checkpoint()

    # --- one iteration --------------------------------------------------------------------------------------
    def _loss_fn(self, cameras: Cameras, step: int):
        # A guidance that compares opacity too (reconstruction.py's) says so with ``uses_opacity``.
        wants_opacity = getattr(self.guidance_fn, "uses_opacity", False)

        def loss_fn(images):
            rgb = images["rgb"].permute(0, 3, 1, 2)
            extra = {"opacity": images["opacity"][..., 0]} if wants_opacity else {}
            return (self.guidance_fn(rgb, cameras, step, self.settings.schedule_length, **extra)
                    + regularisers(images["opacity"], step, self.settings))
        return loss_fn

    def train_step(self) -> float:
        s, step = self.settings, self.step
        for group in self.optimizer.param_groups:
            group["lr"] = s.lr[group["name"]] * lr_factor(group["name"], step, s)
        cameras = s.cameras.sample(s.batch_size, self.generator, scene_unit(self.field.bbox))
        background = None
        if float(torch.rand((), generator=self.generator)) < s.background_aug_prob:
            background = torch.rand(s.batch_size, 3, generator=self.generator)
        size = render_size(step, s)
        grid = self.field.occupancy
        if s.render.skip_free_space and (step % UPDATE_EVERY == 0 or not grid.updated):
            grid.update(self.field, step)
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = render_with_loss(self.field, cameras, size, size, self._loss_fn(cameras, step), s.render,
                                   background, self.generator)
        grads = [p.grad for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            self.optimizer.step()
            self.bad_run = 0
        else:
            self.skipped += 1
            self.bad_run += 1
            log.warning("GeoDream: step %d had a non-finite loss or gradient; skipped (%d so far)", step, self.skipped)
            if self.bad_run >= s.max_bad_steps:
                raise NonFiniteError(
                    f"GeoDream: {self.bad_run} refinement steps in a row gave NaN/inf (step {step}). The field or the "
                    "guidance diverged: lower the learning rates, check the cost volume, or resume from the last "
                    "checkpoint with another seed.")
        self.step += 1
        return float(loss)

    def run(self, on_step=None) -> NeuSField:
        """Train to ``settings.steps``; ``on_step(step, refinement)`` after each step may raise to stop (e.g. an
        interrupt): the state of that step is checkpointed first, so nothing done is lost."""
        while self.step < self.settings.steps:
            self.train_step()
            finished = self.step == self.settings.steps
            if self.checkpoint_path and (self.step % self.settings.checkpoint_every == 0 or finished):
                self.save_checkpoint()
            if on_step is not None:
                try:
                    on_step(self.step, self)
                except BaseException:
                    if self.checkpoint_path and self.step % self.settings.checkpoint_every and not finished:
                        self.save_checkpoint()
                    raise
        return self.field

    # --- checkpoints ----------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Everything to continue exactly; once the run reached its length, the result only (field, LoRA, random
        state): the optimiser moments, two thirds of the file, are what a finished run no longer needs."""
        finished = self.step >= self.settings.steps
        state = {"format": CHECKPOINT_FORMAT, "step": self.step, "skipped": self.skipped, "bad_run": self.bad_run,
                 "schedule_steps": self.settings.schedule_length, "field": self.field.state_dict(),
                 "generator": self.generator.get_state()}
        if not finished:
            state["optimizer"] = self.optimizer.state_dict()
        if hasattr(self.guidance_fn, "state_dict"):
            state["guidance"] = self.guidance_fn.state_dict()
            if finished:
                state["guidance"].pop("optimizer", None)
        run_store.write(self.checkpoint_path, state, run_store.RunInfo(
            self.family, self.settings.seed, self.step, self.settings.steps, self.settings.schedule_length))

    def load_checkpoint(self) -> None:
        state = run_store.load(self.checkpoint_path, self.device, CHECKPOINT_FORMAT)
        with run_store.restoring(self.checkpoint_path):
            self.field.load_state_dict(state["field"])
            if "optimizer" in state:
                self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"].cpu())
            if "guidance" in state:
                state["guidance"]["generator"] = state["guidance"]["generator"].cpu()
                self.guidance_fn.load_state_dict(state["guidance"])
            self.step, self.skipped, self.bad_run = state["step"], state["skipped"], state["bad_run"]
        self.settings = replace(self.settings, schedule_steps=state["schedule_steps"])
        log.info("GeoDream: resuming refinement at step %d of %d (schedules of a %d-step run) from %s", self.step,
                 self.settings.steps, self.settings.schedule_length, self.checkpoint_path)
