"""Networks out of a latent-diffusion (ldm / CompVis layout) single-file state dict, as the published Zero123,
Stable Zero123 and MVDream checkpoints store them, rebuilt as diffusers / open_clip modules. Widths and depths are
read off the tensor shapes, so the same code loads the published files and the tests' small twins.

- ``first_stage_model.*``: the KL VAE (ldm's AutoencoderKL names) -> diffusers AutoencoderKL (diffusers' own key
  conversion);
- ``model.diffusion_model.*`` (or its EMA copy ``model_ema.*``): an SD 1.x-style openaimodel UNet with a
  SpatialTransformer at some levels -> diffusers UNet2DConditionModel (diffusers' own key conversion);
- ``cond_stage_model.model.visual.*``: OpenAI CLIP's image tower (QuickGELU) -> open_clip VisionTransformer, whose
  parameter names are OpenAI's, loaded strictly.
"""
from __future__ import annotations

import math

import torch

VAE_PREFIX = "first_stage_model."
UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VISUAL_PREFIX = "cond_stage_model.model.visual."
LATENT_SCALE = 0.18215  # ldm's scale_factor for the SD VAE (every config of these models)
VAE_RESOLUTION = 256
CLIP_HEAD_CHANNELS = 64  # OpenAI CLIP's ViTs: width / 64 heads (ViT-L/14: 1024 wide, 16 heads)


def vae_from_ldm(state: dict[str, torch.Tensor]):
    """diffusers AutoencoderKL from the ldm VAE keys, its width and depth read off the tensor shapes."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    enc = VAE_PREFIX + "encoder.down."
    levels = len({k[len(enc):].split(".")[0] for k in state if k.startswith(enc)})
    channels = tuple(state[f"{enc}{i}.block.0.conv1.weight"].shape[0] for i in range(levels))
    layers = len({k.split(".")[5] for k in state if k.startswith(f"{enc}0.block.")})
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=channels,
                        layers_per_block=layers, latent_channels=state[VAE_PREFIX + "post_quant_conv.weight"].shape[1],
                        sample_size=VAE_RESOLUTION, scaling_factor=LATENT_SCALE)
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, vae.config), strict=True)
    return vae


def has_ema(state: dict[str, torch.Tensor]) -> bool:
    """Whether the file keeps ldm's EMA copy of the UNet (LitEma buffers ``model_ema.<name without dots>``)."""
    return sum(k.startswith(EMA_PREFIX) for k in state) > 100 or any(k.startswith(EMA_PREFIX + "diffusion_model") for k in state)


def unet_config(state: dict[str, torch.Tensor], heads: int) -> dict:
    """diffusers UNet2DConditionModel arguments of the openaimodel UNet under ``model.diffusion_model.``.

    ``heads``: attention heads per SpatialTransformer (ldm's num_heads; not visible in the shapes)."""
    p = UNET_PREFIX
    blocks = {int(k[len(p + "input_blocks."):].split(".")[0]) for k in state if k.startswith(p + "input_blocks.")}
    downs = sorted(b for b in blocks if f"{p}input_blocks.{b}.0.op.weight" in state)
    levels = len(downs) + 1
    per_level = (len(blocks) - 1 - len(downs)) // levels  # ldm's num_res_blocks
    conv_in = state[p + "input_blocks.0.0.weight"]
    base = conv_in.shape[0]
    firsts = [1 + level * (per_level + 1) for level in range(levels)]
    widths = tuple(state[f"{p}input_blocks.{b}.0.out_layers.3.weight"].shape[0] for b in firsts)
    attention = [f"{p}input_blocks.{b}.1.proj_in.weight" in state for b in firsts]
    context = next(v.shape[1] for k, v in state.items() if k.startswith(p) and k.endswith("attn2.to_k.weight"))
    linear = state[p + "middle_block.1.proj_in.weight"].ndim == 2
    return dict(sample_size=32, in_channels=conv_in.shape[1], out_channels=state[p + "out.2.weight"].shape[0],
                block_out_channels=widths, layers_per_block=per_level, cross_attention_dim=context,
                attention_head_dim=heads, use_linear_projection=linear,
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)))


def unet_from_ldm(state: dict[str, torch.Tensor], heads: int, load_weights):
    """diffusers UNet2DConditionModel from the ldm UNet; the EMA weights when the file has them, as ldm's
    ``ema_scope`` samples with (LatentDiffusion's use_ema defaults to True). ``load_weights(module, state)`` loads
    with the caller's error reporting."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = UNet2DConditionModel(**unet_config(state, heads))
    load_weights(unet, convert_ldm_unet_checkpoint(state, unet.config, extract_ema=has_ema(state)))
    return unet.eval()


def clip_vision_from_openai(state: dict[str, torch.Tensor], load_weights):
    """open_clip VisionTransformer (QuickGELU, as OpenAI's CLIP) from ``cond_stage_model.model.visual.*``; its
    forward gives the projected image embedding [B, output_dim] of the class token."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    visual = {k[len(VISUAL_PREFIX):]: v for k, v in state.items() if k.startswith(VISUAL_PREFIX)}
    patch = visual["conv1.weight"]
    width, size = patch.shape[0], patch.shape[-1]
    grid = int(math.isqrt(visual["positional_embedding"].shape[0] - 1))
    layers = len({k.split(".")[2] for k in visual if k.startswith("transformer.resblocks.")})
    mlp = visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width
    tower = VisionTransformer(image_size=grid * size, patch_size=size, width=width, layers=layers,
                              heads=max(width // CLIP_HEAD_CHANNELS, 1), mlp_ratio=mlp,
                              output_dim=visual["proj"].shape[1], act_layer=QuickGELU)
    load_weights(tower, visual)
    return tower.eval()
