"""Tiny random twins of the published multi-view models, saved in the published on-disk formats:
- Zero123++: a diffusers folder (model_index.json with ramping_coefficients, unet/, vae/, text_encoder/, tokenizer/,
  vision_encoder/, feature_extractor_clip/, feature_extractor_vae/, scheduler/);
- MVDream: the single-file latent-diffusion state dict (model.diffusion_model.* / first_stage_model.* in ldm's VAE
  names / cond_stage_model.model.* from a real OpenCLIP text tower), and the diffusers-format port.
Tokenizers come from a hand-made vocabulary; nothing is downloaded."""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

TEXT_WIDTH = 64  # one 64-channel head, the head size MVDream and OpenCLIP ViT-H use
TILE = 16  # Zero123++ twin tile side (320 in the release)
MV_RESOLUTION = 16  # MVDream twin view side (256 in the release)
VOCAB_WORDS = ["a", "an", "the", "owl", "cat", "3d", "asset", ",", "red", "blue"]


def write_tokenizer(folder: Path) -> None:
    """A CLIP BPE tokenizer over a handful of whole words (no merges needed for single-character pieces)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = sorted(set("".join(VOCAB_WORDS)))
    tokens = ["!"] + letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    merges = ["#version: 0.2"]
    for word in VOCAB_WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            tokens.append(pieces[0])
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n", encoding="utf-8")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77, pad_token="!").save_pretrained(folder)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                         sample_size=MV_RESOLUTION)


def _randomise(module: torch.nn.Module, seed: int, std: float = 0.05) -> torch.nn.Module:
    """Random weights everywhere (zero-initialised output layers would make every output trivially equal)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight")) or ".ln_" in name:
                p.copy_(1 + std * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(std * torch.randn(p.shape, generator=generator))
    return module.eval()


def write_zero123plus(folder: Path, seed: int = 0) -> Path:
    from diffusers import EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)

    folder.mkdir(parents=True, exist_ok=True)
    write_tokenizer(folder / "tokenizer")
    vocab = json.loads((folder / "tokenizer/vocab.json").read_text())
    width, std = 32, 0.1  # strong enough weights that the condition image visibly steers the twin's views
    _randomise(UNet2DConditionModel(
        sample_size=TILE // 2, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=width,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True), seed, std).save_pretrained(folder / "unet")
    _randomise(_tiny_vae(), seed + 1, std).save_pretrained(folder / "vae")
    _randomise(CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=width, intermediate_size=48, num_hidden_layers=1,
                                            num_attention_heads=2, max_position_embeddings=77,
                                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=0)),
               seed + 2, std).save_pretrained(folder / "text_encoder")
    _randomise(CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                                              num_attention_heads=2, image_size=32, patch_size=8,
                                                              projection_dim=width)), seed + 3, std).save_pretrained(folder / "vision_encoder")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder / "feature_extractor_clip")
    CLIPImageProcessor(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                       image_mean=[0.5] * 3, image_std=[0.8] * 3).save_pretrained(folder / "feature_extractor_vae")
    EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                    prediction_type="v_prediction").save_pretrained(folder / "scheduler")
    ramp = torch.linspace(0.0, 1.0, 77).tolist()
    index = {"_class_name": "Zero123PlusPipeline", "_diffusers_version": "0.20.2", "ramping_coefficients": ramp,
             "feature_extractor_clip": ["transformers", "CLIPImageProcessor"],
             "feature_extractor_vae": ["transformers", "CLIPImageProcessor"],
             "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "vision_encoder": ["transformers", "CLIPVisionModelWithProjection"]}
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


def tiny_mvdream_unet(seed: int = 0):
    from geodream_pack.geodream_ops.multiview.mvdream_unet import MultiViewUNet

    return _randomise(MultiViewUNet(model_channels=64, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(1,),
                                    context_dim=TEXT_WIDTH, camera_dim=16), seed)


def tiny_open_clip_text(seed: int = 0):
    """A real OpenCLIP CLIP model (text tower as in ViT-H: GELU, causal mask), two blocks of width 64."""
    import open_clip

    model = open_clip.model.CLIP(embed_dim=32, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
                                 text_cfg=open_clip.model.CLIPTextCfg(width=TEXT_WIDTH, heads=1, layers=2))
    return _randomise(model, seed)


def diffusers_vae_to_ldm(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename a diffusers AutoencoderKL state dict to latent diffusion's VAE names (the layout of the published
    single files); attention projections become 1x1 convolutions as there."""
    rules = [(r"conv_norm_out", "norm_out"), (r"\.conv_shortcut\.", ".nin_shortcut."),
             (r"mid_block\.resnets\.(\d)", lambda m: f"mid.block_{int(m.group(1)) + 1}"),
             (r"mid_block\.attentions\.0\.group_norm", "mid.attn_1.norm"),
             (r"mid_block\.attentions\.0\.to_(q|k|v)", r"mid.attn_1.\1"),
             (r"mid_block\.attentions\.0\.to_out\.0", "mid.attn_1.proj_out"),
             (r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
             (r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
             (r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block."),
             (r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.")]
    out = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        if re.search(r"attn_1\.(q|k|v|proj_out)\.weight$", key):
            value = value[:, :, None, None]
        out["first_stage_model." + key] = value
    return out


def mvdream_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    unet = tiny_mvdream_unet(seed)
    vae = _randomise(_tiny_vae(), seed + 1)
    text = tiny_open_clip_text(seed + 2)
    state = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    state.update(diffusers_vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update({"cond_stage_model.model." + k: v for k, v in text.state_dict().items() if not k.startswith("visual.")})
    # The release also stores the diffusion schedule as buffers beside the networks.
    state["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    return state


def write_mvdream_single_file(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mvdream_state_dict(seed), path)
    return path


def write_mvdream_diffusers(folder: Path, seed: int = 0) -> Path:
    """The diffusers-format port: unet/ keeps the single file's UNet names, the rest are diffusers/transformers."""
    from diffusers import DDIMScheduler
    from safetensors.torch import save_file

    from geodream_pack.geodream_ops.multiview import mvdream_pipeline

    single_file = write_mvdream_single_file(folder.parent / f".{folder.name}.pt", seed)
    model = mvdream_pipeline.load_single_file(single_file)
    single_file.unlink()
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "MultiViewUNetModel", "image_size": 32, "num_head_channels": 64, "use_checkpoint": False,
              **{k: list(v) if isinstance(v, tuple) else v for k, v in model.unet.config.items()}}
    (folder / "unet/config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.unet.state_dict().items()}, str(folder / "unet/diffusion_pytorch_model.safetensors"))
    model.vae.save_pretrained(folder / "vae")
    model.text_encoder.save_pretrained(folder / "text_encoder")
    write_tokenizer(folder / "tokenizer")
    DDIMScheduler(**mvdream_pipeline.SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    index = {"_class_name": "MVDreamPipeline", "_diffusers_version": "0.25.0", "unet": ["mv_unet", "MultiViewUNetModel"],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
             "feature_extractor": [None, None], "image_encoder": [None, None]}
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


ZERO123_CONTEXT = 32  # cross-attention width of the Zero123 twin (768 in the release)
ZERO123_CLIP = 16  # the twin's CLIP image tower input side (224 in the release)


def diffusers_unet_to_ldm(state: dict[str, torch.Tensor], levels: int, per_level: int,
                          attention: tuple[bool, ...]) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet2DConditionModel state dict to the openaimodel names of the published ldm files
    (input_blocks / middle_block / output_blocks; in_layers / emb_layers / out_layers / skip_connection), written
    from ldm's UNetModel layout rather than from diffusers' converter, so the loader is checked against it."""
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
              ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]

    def block(key: str) -> str:
        m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", key)
        if m:
            level, kind, i, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            if kind == "downsamplers":
                return f"input_blocks.{(level + 1) * (per_level + 1)}.0.op.{rest.removeprefix('conv.')}"
            index = 1 + level * (per_level + 1) + i
            return f"input_blocks.{index}.{0 if kind == 'resnets' else 1}.{rest}"
        m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", key)
        if m:
            level, kind, i, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            if kind == "upsamplers":
                has_attention = attention[levels - 1 - level]
                return f"output_blocks.{level * (per_level + 1) + per_level}.{2 if has_attention else 1}.{rest}"
            return f"output_blocks.{level * (per_level + 1) + i}.{0 if kind == 'resnets' else 1}.{rest}"
        m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", key)
        if m:
            kind, i, rest = m.groups()
            return f"middle_block.{1 if kind == 'attentions' else 2 * int(i)}.{rest}"
        fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                 "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
        head, _, tail = key.rpartition(".")
        return f"{fixed[head]}.{tail}"

    out = {}
    for key, value in state.items():
        name = block(key)
        for ours, theirs in resnet:
            name = re.sub(rf"^((?:input|output)_blocks\.\d+\.0|middle_block\.[02])\.{ours}\.", rf"\1.{theirs}.", name)
        out[name] = value
    return out


def tiny_zero123_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    return _randomise(UNet2DConditionModel(
        sample_size=8, in_channels=8, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        cross_attention_dim=ZERO123_CONTEXT, attention_head_dim=8, use_linear_projection=False,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
        seed, 0.1)


def tiny_openai_clip_visual(seed: int = 0):
    """OpenAI CLIP's image tower layout (QuickGELU; open_clip keeps OpenAI's names) at width 64, one block."""
    from open_clip.transformer import QuickGELU, VisionTransformer

    return _randomise(VisionTransformer(image_size=ZERO123_CLIP, patch_size=8, width=64, layers=1, heads=1,
                                        mlp_ratio=2.0, output_dim=ZERO123_CONTEXT, act_layer=QuickGELU), seed, 0.1)


def zero123_state_dict(seed: int = 0, ema: bool = False) -> dict[str, torch.Tensor]:
    """The published layout of zero123-xl.ckpt / stable_zero123.ckpt's ``state_dict`` at small widths: the ldm UNet
    (8 input channels), cc_projection (context + 4 -> context), the ldm VAE, OpenAI CLIP's visual tower under
    cond_stage_model.model.visual (plus the text-side leftovers the real files carry), the schedule buffers and,
    with ``ema``, LitEma's copy of the UNet (``model_ema.diffusion_model<name without dots>``) holding other values."""
    unet = tiny_zero123_unet(seed)
    unet_state = diffusers_unet_to_ldm(unet.state_dict(), 2, 1, (True, False))
    state = {"model.diffusion_model." + k: v for k, v in unet_state.items()}
    if ema:
        other = diffusers_unet_to_ldm(tiny_zero123_unet(seed + 10).state_dict(), 2, 1, (True, False))
        state.update({"model_ema.diffusion_model" + k.replace(".", ""): v for k, v in other.items()})
        state["model_ema.decay"], state["model_ema.num_updates"] = torch.tensor(0.9999), torch.tensor(0, dtype=torch.int)
    state.update(diffusers_vae_to_ldm(_randomise(_tiny_vae(), seed + 1, 0.1).state_dict(), 2))
    state.update({"cond_stage_model.model.visual." + k: v for k, v in tiny_openai_clip_visual(seed + 2).state_dict().items()})
    state["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    state["cond_stage_model.model.text_projection"] = torch.zeros(16, ZERO123_CONTEXT)
    projection = torch.nn.Linear(ZERO123_CONTEXT + 4, ZERO123_CONTEXT)
    _randomise(projection, seed + 3, 0.2)
    state["cc_projection.weight"], state["cc_projection.bias"] = projection.weight.detach(), projection.bias.detach()
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    state["betas"], state["alphas_cumprod"] = betas.float(), torch.cumprod(1 - betas, 0).float()
    return state


def write_zero123_checkpoint(path: Path, seed: int = 0, ema: bool = False) -> Path:
    """The twin as published: a .ckpt holding {"state_dict": ..., "global_step": ...}, or bare tensors as
    .safetensors when ``path`` ends so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = zero123_state_dict(seed, ema)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": state, "global_step": 105000, "epoch": 3}, path)
    return path
