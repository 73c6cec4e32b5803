"""Zero123++ (Shi et al., 2023) image-to-multi-view sampling on diffusers building blocks.

The method, as in the published diffusers pipeline (our own code; the hub "custom pipeline" is not used):
- Reference attention: at every step the condition image's VAE latents, noised to the current timestep, run
  through the same UNet first; each self-attention layer keeps its input tokens, and in the pass over the 3x2 grid
  of views every self-attention attends to its own tokens and the kept reference tokens together.
- Global conditioning: the CLIP vision encoder's image embedding, scaled per token by the published
  ``ramping_coefficients`` (model_index.json), is added to the text encoding of the empty prompt.
- Classifier-free guidance: the unconditional branch has the plain empty-prompt encoding and, as reference, the
  VAE latents of an all-zero (grey) image.
- Scaling: the grid's latents live in a shifted, scaled space, z = (z_vae - 0.22) * 0.75 (only its inverse is
  needed to sample), and the decoded image is rescaled by 0.8 / 0.5; the reference latents are the raw VAE latents.
- Sampling: Euler ancestral with "trailing" timesteps, as the authors recommend; 6 tiles in a 3 (rows) x 2 grid.

v1.1 and v1.2 share this pipeline and the folder layout; they differ in their weights and in the cameras of the
six views (cameras.zero123plus_rig): v1.1 at elevations 30/-20, v1.2 at 20/-10 with a 30 degree field of view.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .. import model_files
from . import mv_files
from ..images import to_pil

GRID_ROWS, GRID_COLS = 3, 2
LATENT_SHIFT, LATENT_GAIN = 0.22, 0.75
IMAGE_GAIN = 0.5 / 0.8
VERSIONS = ("v1.2", "v1.1")
# How GeoDream's release ran Zero123++ (mv-diffusion/zero123plus/examples/img_to_6mv.py: v1.1, 75 steps, Euler
# ancestral with trailing spacing, the pipeline's default CFG 4, torch_dtype float16).
RELEASE_STEPS = 75
RELEASE_GUIDANCE = 4.0
RELEASE_PRECISION = "fp16"
DIFFUSERS_LAYOUT = [
    "model_index.json", "scheduler/scheduler_config.json",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin",
    "vae/config.json", "vae/diffusion_pytorch_model.safetensors|vae/diffusion_pytorch_model.bin",
    "text_encoder/config.json", "text_encoder/model.safetensors|text_encoder/pytorch_model.bin",
    "tokenizer/vocab.json", "tokenizer/merges.txt",
    "vision_encoder/config.json", "vision_encoder/model.safetensors|vision_encoder/pytorch_model.bin",
    "feature_extractor_clip/preprocessor_config.json", "feature_extractor_vae/preprocessor_config.json",
]


def unscale_latents(latents: torch.Tensor) -> torch.Tensor:
    return latents / LATENT_GAIN + LATENT_SHIFT


def unscale_image(image: torch.Tensor) -> torch.Tensor:
    return image / IMAGE_GAIN


def split_grid(grid: torch.Tensor) -> torch.Tensor:
    """[3T, 2T, C] grid -> [6, T, T, C] tiles in row-major order (the order of the camera rig)."""
    h, w, c = grid.shape
    t = h // GRID_ROWS
    if h != GRID_ROWS * t or w != GRID_COLS * t:
        raise ValueError(f"a Zero123++ grid is {GRID_ROWS}x{GRID_COLS} square tiles, got {h}x{w} pixels")
    return grid.reshape(GRID_ROWS, t, GRID_COLS, t, c).permute(0, 2, 1, 3, 4).reshape(GRID_ROWS * GRID_COLS, t, t, c)


def merge_grid(tiles: torch.Tensor) -> torch.Tensor:
    """[6, T, T, C] tiles -> [3T, 2T, C] grid; the inverse of split_grid."""
    n, t, _, c = tiles.shape
    if n != GRID_ROWS * GRID_COLS:
        raise ValueError(f"a Zero123++ grid holds {GRID_ROWS * GRID_COLS} tiles, got {n}")
    return tiles.reshape(GRID_ROWS, GRID_COLS, t, t, c).permute(0, 2, 1, 3, 4).reshape(GRID_ROWS * t, GRID_COLS * t, c)


def noised_reference(alphas_cumprod: torch.Tensor, reference: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """The reference latents at the grid's noise level, as the UNet sees them: sqrt(abar) x + sqrt(1 - abar) eps.
    This is the published Euler add_noise followed by scale_model_input, (x + sigma eps) / sqrt(sigma^2 + 1), at
    the scheduler's (integer) timesteps."""
    abar = alphas_cumprod[int(round(float(t)))]
    return (abar.sqrt() * reference + (1 - abar).sqrt() * noise).to(reference.dtype)


class ReferenceBank:
    """Self-attention inputs kept from the reference pass, keyed by attention layer."""

    def __init__(self):
        self.mode: str | None = None  # None: plain self-attention; "write": keep; "read": attend to the kept
        self.states: dict[str, torch.Tensor] = {}


class ReferenceAttnProcessor:
    """A UNet self-attention (attn1) whose keys and values also cover the reference image's tokens."""

    def __init__(self, name: str, bank: ReferenceBank):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name, self.bank, self.inner = name, bank, AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        context = hidden_states
        if self.bank.mode == "write":
            self.bank.states[self.name] = hidden_states
        elif self.bank.mode == "read":
            context = torch.cat([hidden_states, self.bank.states.pop(self.name)], dim=1)
        return self.inner(attn, hidden_states, context, attention_mask, temb)


def install_reference_attention(unet) -> ReferenceBank:
    """Route every self-attention of ``unet`` through a shared ReferenceBank; cross-attentions stay plain SDPA."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    bank = ReferenceBank()
    unet.set_attn_processor({name: ReferenceAttnProcessor(name, bank) if name.endswith("attn1.processor")
                             else AttnProcessor2_0() for name in unet.attn_processors})
    return bank


@dataclass
class Zero123Plus:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    vision_encoder: torch.nn.Module
    feature_extractor_clip: object
    feature_extractor_vae: object
    scheduler_config: dict
    ramping_coefficients: torch.Tensor  # [77]: how much of the image embedding each prompt token receives
    version: str = "v1.2"
    source: str = ""
    kind = "zero123plus"
    num_views = GRID_ROWS * GRID_COLS

    def __post_init__(self):
        self.bank = install_reference_attention(self.unet)

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.text_encoder, self.vision_encoder]

    @property
    def tile_size(self) -> int:
        """Output tile side: the VAE input size (320 px in both published releases)."""
        return int(self.feature_extractor_vae.crop_size["height"])

    @contextmanager
    def _reference(self, mode: str):
        self.bank.mode = mode
        try:
            yield
        finally:
            self.bank.mode = None
            if mode == "read":
                self.bank.states.clear()

    @torch.no_grad()
    def conditioning(self, image: torch.Tensor, guidance: float, generator: torch.Generator):
        """Reference latents and prompt embeddings for the batch [uncond, cond] (only cond without guidance)."""
        device, dtype = self.unet.device, self.unet.dtype
        pil = to_pil(image)
        vae_in = self.feature_extractor_vae(images=pil, return_tensors="pt").pixel_values.to(device, dtype)
        clip_in = self.feature_extractor_clip(images=pil, return_tensors="pt").pixel_values.to(device, dtype)
        ids = self.tokenizer([""], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids.to(device)
        empty = self.text_encoder(ids).last_hidden_state.to(dtype)
        global_embedding = self.vision_encoder(clip_in).image_embeds.to(dtype)[:, None]
        ramp = self.ramping_coefficients.to(device, dtype)[None, :, None]
        cond = empty + global_embedding * ramp
        reference = self.vae.encode(vae_in).latent_dist.sample(generator)
        if guidance <= 1:
            return reference, cond
        negative = self.vae.encode(torch.zeros_like(vae_in)).latent_dist.sample(generator)
        return torch.cat([negative, reference]), torch.cat([empty, cond])

    @torch.no_grad()
    def generate(self, image: torch.Tensor, steps: int, guidance: float, seed: int,
                 on_step: Callable[[int], None] = lambda step: None) -> torch.Tensor:
        """One [H, W, 3] image of the object on grey -> the six views [6, T, T, 3] in 0..1, in rig order."""
        from diffusers import EulerAncestralDiscreteScheduler

        device, dtype = self.unet.device, self.unet.dtype
        generator = torch.Generator("cpu").manual_seed(seed)
        reference, embeddings = self.conditioning(image, guidance, generator)
        branches = embeddings.shape[0]
        scheduler = EulerAncestralDiscreteScheduler.from_config(self.scheduler_config, timestep_spacing="trailing")
        scheduler.set_timesteps(steps, device=device)
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        tile = self.tile_size // down
        shape = (1, self.vae.config.latent_channels, GRID_ROWS * tile, GRID_COLS * tile)
        latents = torch.randn(shape, generator=generator).to(device, dtype) * scheduler.init_noise_sigma
        alphas_cumprod = scheduler.alphas_cumprod.to(device)
        for step, t in enumerate(scheduler.timesteps):
            model_in = scheduler.scale_model_input(latents.expand(branches, -1, -1, -1), t)
            noise = torch.randn(reference.shape, generator=generator).to(device, dtype)
            noisy_reference = noised_reference(alphas_cumprod, reference, noise, t)
            with self._reference("write"):
                self.unet(noisy_reference, t, embeddings)
            with self._reference("read"):
                prediction = self.unet(model_in, t, embeddings).sample
            if branches == 2:
                uncond, cond = prediction.chunk(2)
                prediction = uncond + guidance * (cond - uncond)
            latents = scheduler.step(prediction, t, latents, generator=generator).prev_sample
            on_step(step)
        decoded = self.vae.decode(unscale_latents(latents) / self.vae.config.scaling_factor).sample
        grid = (unscale_image(decoded.float()) / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).cpu()
        return split_grid(grid)


def load_diffusers(folder: Path, version: str) -> Zero123Plus:
    """The published diffusers folder (sudo-ai/zero123plus-v1.1 or -v1.2), loaded component by component."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    folder = Path(folder)
    if version not in VERSIONS:
        raise ValueError(f"GeoDream: unknown Zero123++ version {version!r}; expected one of {', '.join(VERSIONS)}.")
    mv_files.require_files(folder, DIFFUSERS_LAYOUT, f"Zero123++ {version}", f"Hugging Face sudo-ai/zero123plus-{version}")
    index = mv_files.read_json(folder / "model_index.json")
    if not index.get("ramping_coefficients"):
        raise mv_files.ModelFilesError(f"GeoDream: '{folder / 'model_index.json'}' has no ramping_coefficients; "
                                       "it is not a Zero123++ release folder (sudo-ai/zero123plus-v1.1 or -v1.2).")
    scheduler_config = {k: v for k, v in mv_files.read_json(folder / "scheduler/scheduler_config.json").items()
                        if not k.startswith("_")}
    fix = (f"Download the whole Hugging Face sudo-ai/zero123plus-{version} repository again into "
           f"models/diffusers/{folder.name}/.")
    loaders = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel,
               "tokenizer": CLIPTokenizer, "vision_encoder": CLIPVisionModelWithProjection,
               "feature_extractor_clip": CLIPImageProcessor, "feature_extractor_vae": CLIPImageProcessor}
    parts = {part: model_files.from_folder(lambda: loader.from_pretrained(folder / part), folder / part,
                                           f"Zero123++ {version}'s {part}/", fix)
             for part, loader in loaders.items()}
    return Zero123Plus(
        **parts,
        scheduler_config=scheduler_config,
        ramping_coefficients=torch.tensor(index["ramping_coefficients"], dtype=torch.float32),
        version=version, source=str(folder))
