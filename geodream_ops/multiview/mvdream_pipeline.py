"""MVDream text-to-multi-view sampling: DDIM with classifier-free guidance over the multi-view UNet, SD 2.1's
OpenCLIP ViT-H text encoder (penultimate layer) and VAE.

Two published formats load here:
- the single file ``sd-v2.1-base-4view.pt`` (models/checkpoints/): the whole latent-diffusion state dict
  (``model.diffusion_model.*`` UNet, ``first_stage_model.*`` VAE, ``cond_stage_model.model.*`` OpenCLIP text tower);
  the UNet loads as is, VAE and text tower through diffusers' own ldm/OpenCLIP key conversions, and the prompt is
  tokenised with OpenCLIP's bundled BPE vocabulary, as MVDream did;
- the diffusers-format port (ashawkey/mvdream_diffusers; models/diffusers/<folder>): unet/ with the same key names
  as the single file, vae/, text_encoder/, tokenizer/, scheduler/.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .. import model_files
from . import mv_files
from ..cameras import Cameras, mvdream_camera_embedding
from .ldm_checkpoint import UNET_PREFIX, VAE_PREFIX, vae_from_ldm
from .ldm_schedule import ddim_timesteps
from .mvdream_unet import HEAD_CHANNELS, MultiViewUNet, config_from_state_dict

TEXT_PREFIX = "cond_stage_model.model."
# The sampler of MVDream's scripts: ldm's DDIM over its "linear" (diffusers: scaled_linear) betas, uniform steps
# offset by one, eta 0.
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
                        timestep_spacing="leading")
RESOLUTION = 256
# MVDream's t2i script (and GeoDream's views) append this to every prompt.
PROMPT_SUFFIX = ", 3d asset"


# How GeoDream's release sampled its views (mv-diffusion/MVDream/t2i_single.py as step1-run-mv.sh calls it: DDIM
# 50 steps, eta 0, scale=10 hard-coded in its main; no --fp16, so fp32).
RELEASE_STEPS = 50
RELEASE_GUIDANCE = 10.0
RELEASE_PRECISION = "fp32"
SINGLE_FILE = "MVDream's sd-v2.1-base-4view.pt (the whole multi-view model)"
SINGLE_FILE_FIX = ("Pick sd-v2.1-base-4view.pt in models/checkpoints/; if that is the file, download it again from "
                   "Hugging Face MVDream/MVDream.")
PORT_SOURCE = "converted ashawkey/mvdream_diffusers (e.g. Hugging Face ashawkey/mvdream-sd2.1-diffusers)"
DIFFUSERS_LAYOUT = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors|unet/diffusion_pytorch_model.bin",
                    "vae/config.json", "vae/diffusion_pytorch_model.safetensors|vae/diffusion_pytorch_model.bin",
                    "text_encoder/config.json", "text_encoder/model.safetensors|text_encoder/pytorch_model.bin",
                    "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"]


@dataclass
class MVDream:
    unet: MultiViewUNet
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenize: Callable[[list[str]], torch.Tensor]
    scheduler_config: dict = field(default_factory=lambda: dict(SCHEDULER_CONFIG))
    resolution: int = RESOLUTION
    source: str = ""
    kind = "mvdream"
    num_views = 4

    def modules(self) -> list[torch.nn.Module]:
        return [self.unet, self.vae, self.text_encoder]

    @property
    def resolution_multiple(self) -> int:
        """Image sides must divide evenly through the VAE and every UNet downsampling (64 for the release)."""
        return self._vae_factor * 2 ** (len(self.unet.config["channel_mult"]) - 1)

    @property
    def _vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenize(prompts).to(self.text_encoder.device)
        return self.text_encoder(ids).last_hidden_state

    @torch.no_grad()
    def generate(self, prompt: str, negative_prompt: str, cameras: Cameras, steps: int, guidance: float, seed: int,
                 on_step: Callable[[int], None] = lambda step: None) -> torch.Tensor:
        """Views [N, H, W, 3] in 0..1, one per camera, all denoised jointly over ``ddim_timesteps(steps)``
        (``on_step`` is called once per timestep: one more than ``steps`` when ``steps`` does not divide 1000)."""
        from diffusers import DDIMScheduler

        device, dtype = self.unet.time_embed[0].weight.device, self.unet.dtype
        n = len(cameras)
        scheduler = DDIMScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(steps, device=device)
        # ldm's, descending, as MVDream's sampler steps; diffusers' DDIM step then takes t - 1000 // steps as the
        # previous step, which is ldm's previous one.
        scheduler.timesteps = ddim_timesteps(steps).flip(0).to(device)
        if not prompt.rstrip().endswith(PROMPT_SUFFIX.strip(", ")):
            prompt = prompt + PROMPT_SUFFIX
        cond, uncond = self.encode_text([prompt, negative_prompt]).to(dtype).chunk(2)
        context = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        camera = mvdream_camera_embedding(cameras).to(device, dtype).repeat(2, 1)
        side = self.resolution // self._vae_factor
        generator = torch.Generator("cpu").manual_seed(seed)
        latents = torch.randn(n, self.vae.config.latent_channels, side, side,
                              generator=generator).to(device, dtype) * scheduler.init_noise_sigma
        for step, t in enumerate(scheduler.timesteps):
            eps_uncond, eps_cond = self.unet(torch.cat([latents, latents]), t, context, camera, num_views=n).chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            latents = scheduler.step(eps, t, latents).prev_sample
            on_step(step)
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return ((images.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).cpu()


def _open_clip_tokenizer(context_length: int) -> Callable[[list[str]], torch.Tensor]:
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=context_length)
    return lambda prompts: tokenizer(prompts)


def _hf_tokenizer(tokenizer) -> Callable[[list[str]], torch.Tensor]:
    def tokenize(prompts):
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids
    return tokenize


def _text_encoder_from_open_clip(state: dict[str, torch.Tensor]):
    """transformers CLIPTextModel from the OpenCLIP text tower, cut after the penultimate block (SD 2.x conditions
    on that layer, then the final layer norm)."""
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    tokens = state[TEXT_PREFIX + "token_embedding.weight"]
    blocks = len({k.split(".")[4] for k in state if k.startswith(TEXT_PREFIX + "transformer.resblocks.")})
    width = tokens.shape[1]
    config = CLIPTextConfig(vocab_size=tokens.shape[0], hidden_size=width, num_hidden_layers=blocks - 1,
                            num_attention_heads=width // HEAD_CHANNELS, hidden_act="gelu",
                            intermediate_size=state[TEXT_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                            max_position_embeddings=state[TEXT_PREFIX + "positional_embedding"].shape[0],
                            projection_dim=state.get(TEXT_PREFIX + "text_projection", tokens).shape[1])
    model = CLIPTextModel(config)
    converted = convert_open_clip_checkpoint(model, state)
    unused = re.compile(rf"^(text_projection\.|text_model\.encoder\.layers\.{blocks - 1}\.)")
    # diffusers names the keys as transformers 4 did; transformers 5 models drop the "text_model." level.
    level = "" if any(k.startswith("text_model.") for k in model.state_dict()) else "text_model."
    model.load_state_dict({k.removeprefix(level) if level else k: v for k, v in converted.items() if not unused.match(k)},
                          strict=True)
    return model


def load_single_file(path: Path) -> MVDream:
    required = [UNET_PREFIX + "camera_embed.0.weight", UNET_PREFIX + "input_blocks.0.0.weight",
                VAE_PREFIX + "post_quant_conv.weight", TEXT_PREFIX + "token_embedding.weight"]
    state = model_files.read_state_dict(path, SINGLE_FILE, SINGLE_FILE_FIX, required)
    unet_state = {k[len(UNET_PREFIX):]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    unet = MultiViewUNet(**config_from_state_dict(unet_state))
    model_files.load_weights(unet, unet_state, path, SINGLE_FILE, SINGLE_FILE_FIX)
    context_length = state[TEXT_PREFIX + "positional_embedding"].shape[0]
    return MVDream(unet, vae_from_ldm(state), _text_encoder_from_open_clip(state), _open_clip_tokenizer(context_length),
                   source=str(path))


def load_diffusers(folder: Path) -> MVDream:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    mv_files.require_files(folder, DIFFUSERS_LAYOUT, "MVDream (diffusers port)", PORT_SOURCE)
    what = f"MVDream's multi-view UNet (unet/ of the diffusers port in '{folder.name}')"
    fix = f"Pick an MVDream folder in models/diffusers/ (the whole {PORT_SOURCE}), or download it again."
    unet_config = mv_files.read_json(folder / "unet/config.json")
    if unet_config.get("ip_dim", 0) or unet_config.get("num_head_channels", HEAD_CHANNELS) != HEAD_CHANNELS:
        raise mv_files.ModelFilesError(f"GeoDream: '{folder}' holds an ImageDream or non-standard UNet; use the "
                                       "text-to-multi-view MVDream (sd-v2.1-base-4view) port.")
    weights = mv_files.weights_file(folder / "unet")
    unet_state = model_files.read_state_dict(weights, what, fix, ["camera_embed.0.weight", "input_blocks.0.0.weight"])
    unet = MultiViewUNet(**config_from_state_dict(unet_state))
    model_files.load_weights(unet, unet_state, weights, what, fix)
    scheduler_config = {**SCHEDULER_CONFIG, **{k: v for k, v in mv_files.read_json(folder / "scheduler/scheduler_config.json").items()
                                               if not k.startswith("_")}}
    parts = [model_files.from_folder(lambda: loader.from_pretrained(folder / part), folder / part,
                                     f"the MVDream port's {part}/", fix)
             for part, loader in (("vae", AutoencoderKL), ("text_encoder", CLIPTextModel), ("tokenizer", CLIPTokenizer))]
    return MVDream(unet, parts[0], parts[1], _hf_tokenizer(parts[2]), scheduler_config, source=str(folder))
