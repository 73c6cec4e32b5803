"""Score distillation losses on rendered images: Variational Score Distillation (ProlificDreamer) and plain SDS.

For latents z of a render, noise eps and t ~ U[t_min, t_max]:  z_t = sqrt(a_t) z + sqrt(1 - a_t) eps,
    VSD:  grad_z = w(t) (eps_pretrain(z_t, t, y) - eps_lora(z_t, t, y, camera)),   w(t) = 1 - a_t
    SDS:  grad_z = w(t) (eps_pretrain(z_t, t, y) - eps)
eps_pretrain uses classifier-free guidance with view-dependent prompts (threestudio's SDS adds the guidance to the
text branch, its VSD to the unconditional one); eps_lora is the LoRA-adapted model,
conditioned on the camera and the plain prompt, trained alongside on the same latents with the diffusion loss.
The gradient enters the render through the surrogate loss 0.5 ||z - sg(z - grad)||^2 (summed, / batch), whose
derivative in z is exactly grad / batch."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..cameras import Cameras, view_direction
from ..prior.release_frame import release_c2w
from .lora import CameraLoRA
from .sd_guidance import Guidance

DIRECTIONS = ("front", "side", "back", "overhead")


@dataclass
class DistillSettings:
    mode: str = "vsd"
    guidance_scale: float = 7.5
    min_step_percent: float = 0.02
    max_step_percent: float = 0.98
    # geodream-neus.yaml drops t_max from 0.98 to 0.5 at Lightning step 15001 of 60000 ([15000, 0.98, 0.5, 15001]):
    # iteration 5,001 of 20,000, a quarter into the run.
    max_step_percent_annealed: float = 0.5
    anneal_at_fraction: float = 15001 / 60000
    lora_rank: int = 4
    lora_lr: float = 1e-4
    camera_dropout: float = 0.1  # how often the LoRA trains without its camera (threestudio's lora_cfg_training)
    # View-dependent prompts (geodream-neus.yaml prompt_processor): ", front view" within 20 deg of the front,
    # ", back view" within 40 deg of the back, "overhead" past 50 deg (cameras.view_direction gives the frame).
    front_threshold: float = 20.0
    back_threshold: float = 40.0
    overhead_threshold: float = 50.0


class ScoreDistillation:
    """``fn(images [B, 3, H, W] in 0..1, cameras, step, total_steps) -> scalar loss``; in VSD mode each call also
    takes one optimiser step of the LoRA. ``state_dict`` holds everything needed to resume (LoRA, its optimiser,
    the random state)."""

    def __init__(self, guidance: Guidance, prompt: str, settings: DistillSettings, seed: int = 0):
        if settings.mode not in ("vsd", "sds"):
            raise ValueError(f"GeoDream: score distillation mode must be 'vsd' or 'sds', got {settings.mode!r}")
        self.guidance, self.settings = guidance, settings
        self.generator = torch.Generator().manual_seed(seed)
        names = [f"{prompt}, {d} view" for d in DIRECTIONS] + [prompt, ""]
        embeddings = guidance.encode_text(names)
        self.view_text = dict(zip(DIRECTIONS, embeddings[:4]))
        self.plain_text, self.uncond_text = embeddings[4], embeddings[5]
        self.base_alphas = guidance.base.scheduler.alphas_cumprod.to(guidance.device)
        self.lora = self.optimizer = None
        self.last_lora_loss = float("nan")
        if settings.mode == "vsd":
            with torch.random.fork_rng(devices=[]):  # the LoRA's random start follows the seed
                torch.manual_seed(seed)
                self.lora = CameraLoRA(guidance.lora.unet, settings.lora_rank).to(guidance.device)
            self.lora_alphas = guidance.lora.scheduler.alphas_cumprod.to(guidance.device)
            self.optimizer = torch.optim.AdamW(self.lora.parameters(), lr=settings.lora_lr, betas=(0.9, 0.99), eps=1e-15)

    # --- schedule -----------------------------------------------------------------------------------------------
    def timestep_range(self, step: int, total_steps: int) -> tuple[int, int]:
        s = self.settings
        annealed = total_steps > 0 and step >= s.anneal_at_fraction * total_steps
        top = s.max_step_percent_annealed if annealed else s.max_step_percent
        n = len(self.base_alphas)
        return int(n * s.min_step_percent), int(n * top)

    # --- the two eps-models -------------------------------------------------------------------------------------
    def eps_pretrain(self, noisy: torch.Tensor, t: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """Classifier-free guided eps of the frozen model, with the view-dependent prompt of each camera, in each of
        threestudio's forms: VSD ``uncond + s (text - uncond)`` (stable_diffusion_vsd_guidance.py), SDS
        ``text + s (text - uncond)`` (stable_diffusion_guidance.py compute_grad_sds: its CFG 100 is 101 in the
        usual form)."""
        names = view_direction(cameras.azimuth_deg, cameras.elevation_deg, self.settings.front_threshold,
                               self.settings.back_threshold, self.settings.overhead_threshold)
        text = torch.stack([self.view_text[n] for n in names])
        uncond = self.uncond_text.expand_as(text)
        out = self.guidance.base.unet(torch.cat([noisy] * 2), torch.cat([t] * 2),
                                      encoder_hidden_states=torch.cat([text, uncond])).sample
        cond, free = out.chunk(2)
        return (cond if self.settings.mode == "sds" else free) + self.settings.guidance_scale * (cond - free)

    def eps_lora(self, noisy: torch.Tensor, t: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """eps of the LoRA model for the plain prompt and ``camera`` [B, 4, 4] (the release's camera-to-world,
        release_frame.release_c2w); v-prediction (SD 2.1) converted.
        The release's LoRA guidance scale is 1, i.e. this camera-conditioned output alone."""
        out = self.lora(noisy, t, self.plain_text.expand(len(noisy), -1, -1), camera)
        if self.guidance.lora.prediction_type == "v_prediction":
            a = self.lora_alphas[t].view(-1, 1, 1, 1).to(noisy)
            out = (1 - a).sqrt() * noisy + a.sqrt() * out
        return out

    def score_gradient(self, latents: torch.Tensor, cameras: Cameras, step: int, total_steps: int) -> torch.Tensor:
        """grad_z of the chosen objective at latents [B, 4, h, w] (no graph)."""
        lo, hi = self.timestep_range(step, total_steps)
        batch = latents.shape[0]
        t = torch.randint(lo, hi + 1, (batch,), generator=self.generator).to(self.guidance.device)
        noise = torch.randn(latents.shape, generator=self.generator).to(latents)
        a = self.base_alphas[t].view(-1, 1, 1, 1).to(latents)
        with torch.no_grad():
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            target = self.eps_pretrain(noisy, t, cameras)
            if self.settings.mode == "vsd":
                estimate = self.eps_lora(noisy, t, release_c2w(cameras).to(latents.device))
            else:
                estimate = noise
        return torch.nan_to_num((1 - a) * (target - estimate)).float()

    def lora_loss(self, latents: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """The LoRA's own diffusion loss on the (detached) latents of the render, t ~ U{0..T-1}."""
        latents = latents.detach()
        batch = latents.shape[0]
        t = torch.randint(0, len(self.lora_alphas), (batch,), generator=self.generator).to(self.guidance.device)
        noise = torch.randn(latents.shape, generator=self.generator).to(latents)
        a = self.lora_alphas[t].view(-1, 1, 1, 1).to(latents)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        target = a.sqrt() * noise - (1 - a).sqrt() * latents if self.guidance.lora.prediction_type == "v_prediction" else noise
        camera = release_c2w(cameras).to(latents.device)  # what the release's LoRA is fed (uncond.py c2w)
        if float(torch.rand((), generator=self.generator)) < self.settings.camera_dropout:
            camera = torch.zeros_like(camera)
        pred = self.lora(noisy, t, self.plain_text.expand(batch, -1, -1), camera)
        return F.mse_loss(pred.float(), target.float())

    def __call__(self, images: torch.Tensor, cameras: Cameras, step: int, total_steps: int) -> torch.Tensor:
        latents = self.guidance.encode_images(images, self.generator)
        grad = self.score_gradient(latents.detach(), cameras, step, total_steps)
        loss = 0.5 * F.mse_loss(latents.float(), (latents.float() - grad).detach(), reduction="sum") / latents.shape[0]
        if self.lora is not None:
            self.step_lora(latents, cameras)
        return loss

    def step_lora(self, latents: torch.Tensor, cameras: Cameras) -> None:
        loss = self.lora_loss(latents, cameras)
        self.last_lora_loss = float(loss.detach())
        if not torch.isfinite(loss):
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    # --- resume -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"generator": self.generator.get_state(), "settings": asdict(self.settings)}
        if self.lora is not None:
            state["lora"] = self.lora.state_dict()
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.lora is not None:
            self.lora.load_state_dict(state["lora"])
            if "optimizer" in state:  # a finished run's checkpoint keeps the LoRA without its moments
                self.optimizer.load_state_dict(state["optimizer"])


# SDS as geodream-dmtet-geometry.yaml runs it: CFG 100, and threestudio's default view thresholds (the config sets
# none) of its prompt processor.
SDS_DEFAULTS = {"guidance_scale": 100.0, "anneal_at_fraction": 2000 / 5000, "front_threshold": 45.0,
                "back_threshold": 45.0, "overhead_threshold": 60.0}


def make_guidance_fn(guidance: Guidance, prompt: str, mode: str = "vsd", seed: int = 0, **settings) -> ScoreDistillation:
    """The callable the refinement and DMTet stages drive: ``fn(images, cameras, step, total_steps) -> loss``.
    Defaults follow the release: VSD as geodream-neus.yaml (CFG 7.5, t_max 0.98 -> 0.5 a quarter in, view
    thresholds 20/40/50 deg); SDS as geodream-dmtet-geometry.yaml (CFG 100, t_max 0.98 -> 0.5 at step 2000 of 5000, threestudio's
    default view thresholds 45/45/60 deg). Any DistillSettings field can be overridden (e.g. the texture stage's
    lora_lr=2.5e-5, max_step_percent_annealed=0.4)."""
    if mode == "sds":
        for key, value in SDS_DEFAULTS.items():
            settings.setdefault(key, value)
    return ScoreDistillation(guidance, prompt, DistillSettings(mode=mode, **settings), seed)
