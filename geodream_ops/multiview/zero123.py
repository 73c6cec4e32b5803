"""Zero123-XL and Stable Zero123 (Liu et al. 2023; Stability AI 2023): one image and a relative camera -> a view.

As GeoDream's release runs them (mv-diffusion/One-2-3-45-by-view/utils/zero123_utils.py ``sample_model_batch``,
configs/sd-objaverse-finetune-c_concat-256.yaml, ldm/models/diffusion/ddim.py), on diffusers / open_clip modules:
- cross-attention context [B, 1, 768]: ``cc_projection`` (Linear 772 -> 768) of the CLIP ViT-L/14 image embedding of
  the input concatenated with the camera term T = [delta polar (rad), sin delta azimuth, cos delta azimuth, d];
  d = 0 for Zero123-XL, pi/2 for Stable Zero123 (``0 if model_type == "zero123" else radians(90)``);
- concat latent: the VAE posterior's mode of the input (unscaled: ldm's ``encode_first_stage(x).mode()``), stacked
  with the noisy latent into the UNet's 8 input channels;
- classifier-free guidance: the unconditional branch has zeros for both (the projected context and the latent);
- ldm's DDIM with eta = 1: timesteps ``range(0, 1000, 1000 // steps) + 1`` (77 of them for "75 steps"), alpha_prev
  of the last step alphas_cumprod[0], fresh Gaussian noise every step; the "linear" beta schedule 0.00085..0.012;
- output: VAE decode of latent / 0.18215, (x + 1) / 2 clamped to 0..1.
The CLIP input is the [-1, 1] image resized to the tower's input side with bicubic, align_corners=True and no
antialiasing (kornia.geometry.resize as FrozenCLIPImageEmbedder calls it), then CLIP-normalised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import model_files
from ..errors import GeoDreamError
from . import ldm_checkpoint as ldm
from .ldm_schedule import alphas_cumprod, ddim_timesteps

VARIANTS = ("zero123-xl", "stable-zero123")
# The 4th camera term: the release's model_type "zero123" -> 0, "sd-zero123" -> radians(90) (so does core ComfyUI).
RADIUS_TERM = {"zero123-xl": 0.0, "stable-zero123": math.pi / 2}
FILE_NAMES = {"zero123-xl": "zero123-xl.ckpt", "stable-zero123": "stable_zero123.ckpt"}
UNET_HEADS = 8  # the config's num_heads (not visible in the tensor shapes)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESOLUTION = 256
# How the release ran it (run.py): DDIM eta 1.0, 75 steps for the first stage, 50 for the neighbours, scale 3,
# --half_precision in both run-volume-by-*.sh.
RELEASE_STEPS = 75
RELEASE_NEIGHBOUR_STEPS = 50
RELEASE_GUIDANCE = 3.0
RELEASE_ETA = 1.0
RELEASE_PRECISION = "fp16"
WHAT = "a Zero123-XL or Stable Zero123 checkpoint (zero123-xl.ckpt / stable_zero123.ckpt)"
FIX = ("Put zero123-xl.ckpt (Hugging Face cvlab/zero123-weights) or stable_zero123.ckpt (Hugging Face "
       "stabilityai/stable-zero123) in models/checkpoints/, or `python -m headless.models download zero123-xl`.")
REQUIRED = ("cc_projection.weight", ldm.UNET_PREFIX + "input_blocks.0.0.weight", ldm.VAE_PREFIX + "post_quant_conv.weight",
            ldm.VISUAL_PREFIX + "conv1.weight")


def ddim_schedule(steps: int, eta: float):
    """(timesteps, alpha_t, alpha_prev, sigma), each [S'] ascending, as make_ddim_sampling_parameters."""
    acp = alphas_cumprod()
    t = ddim_timesteps(steps)
    a = acp[t]
    a_prev = torch.cat([acp[:1], acp[t[:-1]]])
    sigma = (eta * ((1 - a_prev.double()) / (1 - a.double()) * (1 - a.double() / a_prev.double())).sqrt()).float()
    return t, a, a_prev, sigma


def ddim_sample(denoise: Callable[[torch.Tensor, int], torch.Tensor], shape, steps: int, eta: float,
                generator: torch.Generator, device, on_step: Callable[[int], None] = lambda step: None) -> torch.Tensor:
    """ldm DDIMSampler.sample with eta: x_T ~ N(0, I), then for t from the last timestep down,
    x0 = (x - sqrt(1 - a_t) e) / sqrt(a_t), x <- sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) e + sigma z.
    ``denoise(x, t)`` returns the guided noise prediction e for latents x [B, C, H, W] (float32) at integer t.
    Noise is drawn on the CPU from ``generator`` (x_T first, then one draw per step) so seeds reproduce anywhere."""
    t, a, a_prev, sigma = ddim_schedule(steps, eta)
    x = torch.randn(shape, generator=generator).to(device)
    for step, index in enumerate(reversed(range(len(t)))):
        e = denoise(x, int(t[index])).float()
        x0 = (x - (1 - a[index]).sqrt() * e) / a[index].sqrt()
        direction = (1 - a_prev[index] - sigma[index] ** 2).sqrt() * e
        z = torch.randn(shape, generator=generator).to(device)
        x = a_prev[index].sqrt() * x0 + direction + sigma[index] * z
        on_step(step)
    return x


def camera_term(delta_polar_deg, delta_azimuth_deg, variant: str) -> torch.Tensor:
    """[N, 4] camera conditioning: [delta polar (rad), sin delta azimuth, cos delta azimuth, radius term].
    Zero123's polar is measured from the up axis, so delta polar = -(delta elevation)."""
    if variant not in VARIANTS:
        raise ValueError(f"GeoDream: unknown Zero123 variant {variant!r}; expected one of {VARIANTS}")
    polar = torch.deg2rad(torch.as_tensor(delta_polar_deg, dtype=torch.float64).reshape(-1))
    azimuth = torch.deg2rad(torch.as_tensor(delta_azimuth_deg, dtype=torch.float64).reshape(-1))
    radius = torch.full_like(polar, RADIUS_TERM[variant])
    return torch.stack([polar, azimuth.sin(), azimuth.cos(), radius], dim=-1).float()


def relative_angles(source, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta polar, delta azimuth) in degrees [N] of ``targets`` (Cameras) seen from the camera ``source``
    (Cameras of one): polar = 90 - elevation, azimuth about +Z as in cameras.spherical_to_position."""
    return source.elevation_deg - targets.elevation_deg, targets.azimuth_deg - source.azimuth_deg


@dataclass
class Zero123:
    """A loaded Zero123-XL / Stable Zero123 (load_checkpoint): the 8-channel UNet, the VAE, the CLIP ViT-L/14 image
    tower and cc_projection (772 -> 768), with the variant that sets the camera term's 4th entry."""
    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    cc_projection: torch.nn.Linear
    variant: str = "zero123-xl"
    source: str = ""
    resolution: int = RESOLUTION  # side of the input and of the views
    view_set: str = "release: the 31 the prior reads"  # zero123_recipe.VIEW_SETS: which views Generate returns
    kind = "zero123"

    def modules(self) -> list[torch.nn.Module]:
        """Every network, for host.on_device."""
        return [self.unet, self.vae, self.image_encoder, self.cc_projection]

    @property
    def resolution_multiple(self) -> int:
        """Image sides must divide evenly through the VAE and every UNet downsampling (64 for the published)."""
        vae = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return vae * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        """The networks' dtype (cc_projection's)."""
        return self.cc_projection.weight.dtype

    @property
    def device(self) -> torch.device:
        """The networks' device (cc_projection's)."""
        return self.cc_projection.weight.device

    @torch.no_grad()
    def conditioning(self, image: torch.Tensor, term: torch.Tensor):
        """[1, 3, H, W] image in -1..1 and [N, 4] camera terms -> (cross-attention context [2N, 1, D], concat
        latents [2N, 4, h, w]), unconditional (zeros) first, as p_sample_ddim batches them."""
        device, dtype = self.device, self.dtype
        image = image.to(device, dtype)
        side = self.image_encoder.image_size[0] if isinstance(self.image_encoder.image_size, tuple) \
            else self.image_encoder.image_size
        clip_in = F.interpolate(image, (side, side), mode="bicubic", align_corners=True)
        clip_in = ((clip_in + 1) / 2 - torch.tensor(CLIP_MEAN, device=device, dtype=dtype)[:, None, None]) \
            / torch.tensor(CLIP_STD, device=device, dtype=dtype)[:, None, None]
        embedding = self.image_encoder(clip_in).float()[:, None]  # [1, 1, 768]
        n = term.shape[0]
        context = self.cc_projection(torch.cat([embedding.expand(n, -1, -1), term.to(device)[:, None]], -1).to(dtype))
        latent = self.vae.encode(image).latent_dist.mode().expand(n, -1, -1, -1)
        return torch.cat([torch.zeros_like(context), context]), torch.cat([torch.zeros_like(latent), latent])

    @torch.no_grad()
    def generate(self, image: torch.Tensor, delta_polar_deg, delta_azimuth_deg, steps: int, guidance: float,
                 seed: int, on_step: Callable[[int], None] = lambda step: None, eta: float = RELEASE_ETA) -> torch.Tensor:
        """One [H, W, 3] image (0..1, object on white, 256 px for the published models) -> views [N, H, W, 3] in
        0..1 at the N relative cameras (degrees), all sampled in one batch as ``sample_model_batch``."""
        x = (image[..., :3].permute(2, 0, 1)[None].float() * 2 - 1)
        term = camera_term(delta_polar_deg, delta_azimuth_deg, self.variant)
        context, concat = self.conditioning(x, term)
        n = term.shape[0]
        down = 2 ** (len(self.vae.config.block_out_channels) - 1)
        shape = (n, self.vae.config.latent_channels, x.shape[-2] // down, x.shape[-1] // down)
        dtype = self.dtype

        def denoise(latents, t):
            if guidance == 1:
                return self.unet(torch.cat([latents.to(dtype), concat[n:]], 1), t, context[n:]).sample
            model_in = torch.cat([torch.cat([latents, latents]).to(dtype), concat], 1)
            uncond, cond = self.unet(model_in, t, context).sample.float().chunk(2)
            return uncond + guidance * (cond - uncond)

        generator = torch.Generator("cpu").manual_seed(seed)
        latents = ddim_sample(denoise, shape, steps, eta, generator, self.device, on_step)
        images = self.vae.decode((latents / ldm.LATENT_SCALE).to(dtype)).sample
        return ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def variant_from_name(name: str) -> str | None:
    """'stable-zero123' for names like stable_zero123.ckpt, 'zero123-xl' for other names saying zero123 (or
    zero-1-to-3), None when the name says neither (then the loader's variant must be set)."""
    low = name.lower().replace("_", "-")
    if "stable" in low and "zero123" in low:
        return "stable-zero123"
    if "zero123" in low or "zero-1-to-3" in low:
        return "zero123-xl"
    return None


def load_checkpoint(path: Path, variant: str) -> Zero123:
    """The published latent-diffusion checkpoint (``state_dict`` of LatentDiffusion; .ckpt, or the same tensors as
    .safetensors). Raises GeoDreamError naming what the file is when it is not a Zero123 checkpoint."""
    if variant not in VARIANTS:
        raise ValueError(f"GeoDream: unknown Zero123 variant {variant!r}; expected one of {VARIANTS}")
    state = model_files.read_state_dict(path, WHAT, FIX, REQUIRED)
    in_channels = state[ldm.UNET_PREFIX + "input_blocks.0.0.weight"].shape[1]
    if in_channels != 8:
        raise GeoDreamError(
            f"GeoDream: '{path}' is not {WHAT}: its UNet takes {in_channels} input channels (Zero123's take 8: the "
            f"noisy latent and the input's latent). {FIX}")

    def load(module, weights):
        model_files.load_weights(module, weights, path, WHAT, FIX)

    projection_weight = state["cc_projection.weight"]
    projection = torch.nn.Linear(projection_weight.shape[1], projection_weight.shape[0])
    load(projection, {"weight": projection_weight, "bias": state["cc_projection.bias"]})
    unet = ldm.unet_from_ldm(state, UNET_HEADS, load)
    vae = ldm.vae_from_ldm(state).eval()
    image_encoder = ldm.clip_vision_from_openai(state, load)
    return Zero123(unet, vae, image_encoder, projection.eval(), variant, str(path))
