"""Tiny random-initialised twins of Stable Diffusion's components (the same diffusers/transformers classes), saved
the two ways users have them: a diffusers folder, and a single-file checkpoint with the published SD 2.x key names
(``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.model.*``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "ball", "red", "front", "side", "back", "overhead", "view", "of", "the"]
UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8, use_linear_projection=True)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
           down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
           sample_size=16)
TEXT = dict(bos_token_id=62, eos_token_id=63, pad_token_id=0, hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
            hidden_act="gelu", projection_dim=32)
SCHEDULER = {"_class_name": "DDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def write_tokenizer(folder: Path) -> int:
    """A CLIP BPE tokenizer over single characters and a few whole words; no merges needed beyond the header."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["!", "!</w>", ",", ",</w>"] + [c for c in "abcdefghijklmnopqrstuvwxyz"]
    tokens += [c + "</w>" for c in "abcdefghijklmnopqrstuvwxyz"] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "pad_token": "!", "do_lower_case": True}))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}))
    return len(tokens)


def build(seed: int = 0, prediction_type: str = "epsilon"):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**UNET)
    vae = AutoencoderKL(**VAE)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=64, **TEXT))
    scheduler = DDPMScheduler.from_config({**SCHEDULER, "prediction_type": prediction_type})
    return unet, vae, text, scheduler


def save_diffusers_folder(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    unet, vae, text, scheduler = build(seed, prediction_type)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    write_tokenizer(folder / "tokenizer")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


# --- diffusers names -> the published (CompVis/Stability) names ------------------------------------------------
def _unet_to_ldm(state: dict) -> dict:
    n = UNET["layers_per_block"] + 1
    renames = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
               ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
               ("mid_block.attentions.0.", "middle_block.1."), ("mid_block.resnets.0.", "middle_block.0."),
               ("mid_block.resnets.1.", "middle_block.2.")]
    levels = len(UNET["block_out_channels"])
    for i in range(levels):
        for j in range(n - 1):
            renames += [(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{n * i + j + 1}.0."),
                        (f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{n * i + j + 1}.1.")]
        renames.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{n * (i + 1)}.0.op."))
        up_attention = "CrossAttn" in UNET["up_block_types"][i]
        for j in range(n):
            renames += [(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{n * i + j}.0."),
                        (f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{n * i + j}.1.")]
        renames.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{n * i + n - 1}.{2 if up_attention else 1}."))
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"), ("conv2", "out_layers.3"),
              ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    out = {}
    for key, value in state.items():
        new = key
        for a, b in renames:
            if new.startswith(a):
                new = b + new[len(a):]
                if ".resnets." in a:
                    for x, y in resnet:
                        new = new.replace(f".{x}.", f".{y}.")
                break
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(state: dict) -> dict:
    levels = len(VAE["block_out_channels"])
    renames = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        renames += [(f"{part}.mid_block.resnets.{i}.", f"{part}.mid.block_{i + 1}.") for i in range(2)]
        renames.append((f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1."))
    for i in range(levels):
        renames += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                    (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                    (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block."),
                    (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")]
    attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for key, value in state.items():
        new = key
        for a, b in renames:
            if new.startswith(a):
                new = b + new[len(a):]
                break
        new = new.replace("conv_shortcut", "nin_shortcut")
        if ".mid.attn_1." in new:
            for x, y in attention.items():
                new = new.replace(f".attn_1.{x}", f".attn_1.{y}")
            if value.ndim == 2:  # the published VAE stores its attention projections as 1x1 convolutions
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def _text_to_open_clip(state: dict) -> dict:
    p = "cond_stage_model.model."
    state = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in state.items()}
    out = {p + "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
           p + "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
           p + "ln_final.weight": state["text_model.final_layer_norm.weight"],
           p + "ln_final.bias": state["text_model.final_layer_norm.bias"],
           p + "text_projection": torch.eye(TEXT["hidden_size"])}
    for i in range(TEXT["num_hidden_layers"]):
        d, o = f"text_model.encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[o + f"attn.in_proj_{kind}"] = torch.cat([state[d + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            out[o + f"attn.out_proj.{kind}"] = state[d + f"self_attn.out_proj.{kind}"]
            out[o + f"ln_1.{kind}"] = state[d + f"layer_norm1.{kind}"]
            out[o + f"ln_2.{kind}"] = state[d + f"layer_norm2.{kind}"]
            out[o + f"mlp.c_fc.{kind}"] = state[d + f"mlp.fc1.{kind}"]
            out[o + f"mlp.c_proj.{kind}"] = state[d + f"mlp.fc2.{kind}"]
    return out


def save_single_file(path: Path, config_dir: Path, seed: int = 0, prediction_type: str = "epsilon"):
    """The checkpoint with published names, plus the diffusers-format configs its loader needs (``config_dir``).
    Returns the twin's modules for comparison."""
    from safetensors.torch import save_file

    unet, vae, text, scheduler = build(seed, prediction_type)
    tensors = {**_unet_to_ldm(unet.state_dict()), **_vae_to_ldm(vae.state_dict()),
               **_text_to_open_clip(text.state_dict())}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    unet.save_config(config_dir / "unet")
    vae.save_config(config_dir / "vae")
    text.config.save_pretrained(config_dir / "text_encoder")
    scheduler.save_config(config_dir / "scheduler")
    write_tokenizer(config_dir / "tokenizer")
    return unet, vae, text
