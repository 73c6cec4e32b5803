"""One-2-3-45's 40-view recipe as GeoDream's release runs it for image to 3D (mv-diffusion/One-2-3-45-by-view/run.py,
utils/zero123_utils.py, utils/utils.py ``get_poses`` / ``gen_poses``, reconstruction/data/One2345_eval_new_data.py).

- First stage, from the input: Zero123 at (delta polar, delta azimuth) of ``STAGE1_DELTAS`` (12 slots;
  ``predict_stage1_gradio``); the release fixes the input's polar angle at 90 (elevation 0), for which it runs slots
  0-3 and 8-11 (polar > 75: the views above); One-2-3-45's branch for a higher input (polar <= 75) runs slots 0-7.
  75 DDIM steps (77 timesteps, see ldm_schedule.ddim_timesteps).
- Second stage, from each first-stage view: 4 neighbours at ``NEIGHBOUR_DELTAS`` (``zero123_infer``), 50 steps,
  conditioned on the first-stage view as saved to PNG (truncated to 8 bits) with every channel >= 253 set to 255.
- Poses (``get_poses``): camera of slot s, neighbour k at polar = input polar + dpolar_s + dpolar_k and azimuth
  theta = 30 + dazimuth_s + dazimuth_k, radius 1.2, focal 280 px on 256, in a Z-up world whose azimuth theta puts the
  camera at (sin theta, -cos theta). Our frame has the first view (the input's own camera) on +X, so our
  elevation = 90 - polar and our azimuth = theta - 30: the release's world turned by +60 degrees about Z.
- Order (pose.json's ``c2ws``): the 8 first-stage views, then for each of them its 4 neighbours.
- The prior reads ``PRIOR_VIEWS`` of those 40 (view 0, the input's own camera, as reference, and 30 neighbours:
  all but the 3rd and 4th neighbour of the third first-stage view).
"""
from __future__ import annotations

import torch

from ..cameras import RELEASE_DISTANCE, RELEASE_FOVY_DEG, Cameras
from .ldm_schedule import ddim_timesteps

STAGE1_DELTAS = tuple(zip([0] * 4 + [30] * 4 + [-30] * 4,
                          [0, 90, 180, 270] + [30 + 90 * i for i in range(4)] * 2))
NEIGHBOUR_DELTAS = ((-10, 0), (10, 0), (0, -10), (0, 10))
TABLE_AZIMUTH_OF_INPUT = 30.0  # get_poses: the input's view sits at theta 30
HIGH_INPUT_POLAR = 75.0  # run.py / get_poses: polar <= 75 takes slots 0-7, else 0-3 and 8-11
RELEASE_INPUT_ELEVATION = 0.0  # run.py: polar_angle = 90
WHITE_FROM = 253.0  # infer_stage_2: input_im_init[input_im_init >= 253.0] = 255.0
PRIOR_VIEWS = (0, *range(8, 18), *range(20, 40))  # One2345_eval_new_data: target_idx 0 and src_views
VIEW_SETS = ("release: the 31 the prior reads", "all 40")


def stage1_slots(input_elevation: float = RELEASE_INPUT_ELEVATION) -> list[int]:
    """Which of the 12 first-stage slots run for an input at ``input_elevation`` degrees."""
    return list(range(8)) if 90 - input_elevation <= HIGH_INPUT_POLAR else [0, 1, 2, 3, 8, 9, 10, 11]


def view_deltas(input_elevation: float = RELEASE_INPUT_ELEVATION) -> list[tuple[float, float]]:
    """(delta polar, delta azimuth) in degrees of the 40 views relative to the input, in pose.json's order."""
    firsts = [STAGE1_DELTAS[s] for s in stage1_slots(input_elevation)]
    return firsts + [(p + dp, a + da) for p, a in firsts for dp, da in NEIGHBOUR_DELTAS]


def recipe_cameras(input_elevation: float = RELEASE_INPUT_ELEVATION) -> Cameras:
    """The 40 cameras in our frame (input camera on +X at ``input_elevation``), radius 1.2, focal 280 px on 256."""
    deltas = torch.tensor(view_deltas(input_elevation), dtype=torch.float32)
    return Cameras.from_spherical(input_elevation - deltas[:, 0], deltas[:, 1] % 360, RELEASE_DISTANCE,
                                  RELEASE_FOVY_DEG, "zero123-one2345-40")


def select(view_set: str) -> list[int]:
    """Indices into the 40 views of a VIEW_SETS choice."""
    if view_set == VIEW_SETS[0]:
        return list(PRIOR_VIEWS)
    if view_set == VIEW_SETS[1]:
        return list(range(40))
    raise ValueError(f"GeoDream: unknown Zero123 view set {view_set!r}; use one of {VIEW_SETS}.")


def as_saved(views: torch.Tensor) -> torch.Tensor:
    """First-stage views [N, H, W, 3] as the second stage reads them back: 8-bit PNG (255 x truncated), channels
    >= 253 set to 255, over 255."""
    q = (views * 255.0).to(torch.uint8).float()
    return torch.where(q >= WHITE_FROM, torch.full_like(q, 255.0), q) / 255.0


def run(model, image: torch.Tensor, steps: int, neighbour_steps: int, guidance: float, seed: int,
        input_elevation: float = RELEASE_INPUT_ELEVATION, on_step=lambda step: None) -> torch.Tensor:
    """The 40 views [40, H, W, 3] (0..1) in pose.json's order from one [H, W, 3] input on white. Each Zero123 batch
    gets its own seed: seed for the first stage, seed + 1 + k for the neighbours of first-stage view k."""
    firsts = [STAGE1_DELTAS[s] for s in stage1_slots(input_elevation)]
    done = [0]

    def progress(step):
        on_step(done[0] + step)

    first = model.generate(image, [p for p, _ in firsts], [a for _, a in firsts], steps, guidance, seed, progress)
    done[0] += len(ddim_timesteps(steps))
    saved = as_saved(first)
    views = [first]
    for k in range(len(firsts)):
        views.append(model.generate(saved[k], [p for p, _ in NEIGHBOUR_DELTAS], [a for _, a in NEIGHBOUR_DELTAS],
                                    neighbour_steps, guidance, seed + 1 + k, progress))
        done[0] += len(ddim_timesteps(neighbour_steps))
    return torch.cat(views)


def total_steps(steps: int, neighbour_steps: int, input_elevation: float = RELEASE_INPUT_ELEVATION) -> int:
    """DDIM steps of the whole recipe (for progress bars): one first-stage batch, one batch per first-stage view."""
    return len(ddim_timesteps(steps)) + len(stage1_slots(input_elevation)) * len(ddim_timesteps(neighbour_steps))
