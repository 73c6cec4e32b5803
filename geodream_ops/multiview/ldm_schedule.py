"""Latent diffusion's noise schedule and DDIM timesteps (ldm/modules/diffusionmodules/util.py), as the release's
Zero123 and MVDream samplers step: one definition for both (zero123.py's own DDIM, mvdream_pipeline.py's
diffusers DDIM given ldm's timesteps)."""
from __future__ import annotations

import torch

LINEAR_START, LINEAR_END, TRAIN_STEPS = 0.00085, 0.0120, 1000


def alphas_cumprod() -> torch.Tensor:
    """[1000] float32: ldm's register_schedule ("linear": betas = linspace(sqrt 0.00085, sqrt 0.012)^2, float64
    cumprod, stored as float32)."""
    betas = torch.linspace(LINEAR_START ** 0.5, LINEAR_END ** 0.5, TRAIN_STEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def ddim_timesteps(steps: int) -> torch.Tensor:
    """ldm's make_ddim_timesteps("uniform"), ascending [S']: every (1000 // steps)-th step from 0, plus one. For a
    count that does not divide 1000 there are more than ``steps`` (75 -> 77, 30 -> 31 from 991; diffusers' "leading"
    30 would start at 958). Where ldm would reach t = 1000 (1000 // steps dividing 999, e.g. 3 or 27 steps) it indexes
    past its 1000 alphas and fails; that one is left out here. ValueError outside 1..1000."""
    if not 1 <= steps <= TRAIN_STEPS:
        raise ValueError(f"GeoDream: DDIM takes 1 to {TRAIN_STEPS} steps, got {steps}")
    timesteps = torch.arange(0, TRAIN_STEPS, TRAIN_STEPS // steps) + 1
    return timesteps[timesteps < TRAIN_STEPS]
