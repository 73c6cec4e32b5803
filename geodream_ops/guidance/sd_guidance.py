"""The GEODREAM_GUIDANCE record: a frozen Stable Diffusion eps-model with its VAE and text encoder, plus the UNet
that VSD's LoRA adapts (the same UNet, or a second model such as SD 2.1 as in the release).

Models load from a diffusers folder, or from a single-file checkpoint (published SD key names) read offline with
the component configs shipped in ``configs/`` and converted by diffusers' own single-file converters."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import model_files, model_manifest
from ..errors import GeoDreamError
from ..multiview.mv_files import read_json

log = logging.getLogger("GeoDream")

CONFIGS = Path(__file__).parent / "configs"
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SINGLE_FILE = "a Stable Diffusion 2.x single-file checkpoint"
SINGLE_FILE_FIX = ("Pick Stable Diffusion 2.1-base (e.g. v2-1_512-ema-pruned.safetensors from Hugging Face "
                   "stabilityai/stable-diffusion-2-1-base) in models/checkpoints/; if that is the file, download it again.")
FOLDER_FIX = ("Pick a Stable Diffusion 2.1(-base) diffusers folder in models/diffusers/ (the whole Hugging Face "
              "stabilityai/stable-diffusion-2-1-base repository); if that is the folder, download it again.")


@dataclass
class DiffusionModel:
    unet: torch.nn.Module
    scheduler: object  # diffusers DDPMScheduler: the noise schedule (alphas_cumprod) and prediction type
    vae: torch.nn.Module | None = None
    text_encoder: torch.nn.Module | None = None
    tokenize: object = None  # list[str] -> LongTensor [B, L]

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type


@dataclass
class Guidance:
    base: DiffusionModel  # frozen eps-prediction model (SD 2.1-base), with VAE and text encoder
    lora: DiffusionModel  # the model VSD's LoRA adapts: ``base`` itself or a second UNet and schedule
    device: torch.device
    dtype: torch.dtype
    name: str = ""  # which files, for logs and for keying resumable runs

    @property
    def shared(self) -> bool:
        return self.lora.unet is self.base.unet

    def modules(self) -> list[torch.nn.Module]:
        """The networks, each once (the LoRA branch's UNet is the base's when shared)."""
        found = (self.base.unet, self.base.vae, self.base.text_encoder, self.lora.unet)
        return list({id(m): m for m in found if m is not None}.values())

    def to(self, device) -> "Guidance":
        """Moves every network (with any LoRA layers in them) to ``device``, which later inputs follow."""
        self.device = torch.device(device)
        for module in self.modules():
            module.to(self.device)
        return self

    @property
    def image_size(self) -> int:
        """Renders are resized to this before the VAE (512 for SD 2.1-base)."""
        return self.base.unet.config.sample_size * 2 ** (len(self.base.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        ids = self.base.tokenize(prompts).to(self.device)
        return self.base.text_encoder(ids)[0].to(self.dtype)

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Differentiable: images [B, 3, H, W] in 0..1 -> scaled latents (a sample of the posterior)."""
        x = F.interpolate(images, (self.image_size, self.image_size), mode="bilinear", align_corners=False)
        posterior = self.base.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
        return (posterior.mean + posterior.std * noise) * self.base.vae.config.scaling_factor


# --- loading -------------------------------------------------------------------------------------------------------
def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(folder))

    def tokenize(prompts):
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    return tokenize


def _open_clip_tokenizer():
    # SD 2 was trained on open_clip's tokenisation (77 tokens, padded with id 0), the BPE that open_clip ships.
    import open_clip

    return lambda prompts: open_clip.tokenize(prompts)


def _scheduler(config_file: Path):
    from diffusers import DDPMScheduler

    config = read_json(config_file)
    config.pop("_class_name", None)
    return DDPMScheduler.from_config(config)


def load_diffusers_folder(folder: Path, unet_only: bool = False) -> DiffusionModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    for part in ("unet", "scheduler") if unet_only else ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / part).is_dir():
            raise model_manifest.ModelNotFound(f"GeoDream: '{folder}' is not a complete diffusers folder: '{part}/' "
                                               f"is missing. {model_manifest.fetch_hint(folder.name)}")

    def part(loader, name):
        return model_files.from_folder(lambda: loader(folder / name), folder / name,
                                       f"Stable Diffusion's {name}/ in '{folder.name}'", FOLDER_FIX)

    model = DiffusionModel(part(UNet2DConditionModel.from_pretrained, "unet"),
                           _scheduler(folder / "scheduler" / "scheduler_config.json"))
    if not unet_only:
        model.vae = part(AutoencoderKL.from_pretrained, "vae")
        model.text_encoder = part(CLIPTextModel.from_pretrained, "text_encoder")
        model.tokenize = part(_clip_tokenizer, "tokenizer")
    return model


def _load_converted(module: torch.nn.Module, state: dict, what: str, path: Path) -> None:
    missing, unexpected = model_files.load_weights(module, state, path, f"{SINGLE_FILE} ({what})", SINGLE_FILE_FIX,
                                                   strict=False)
    if missing:
        raise GeoDreamError(f"GeoDream: '{path}' is not {SINGLE_FILE}: its {what} lacks {len(missing)} tensors "
                            f"(e.g. {missing[0]}). {SINGLE_FILE_FIX}")
    if unexpected:
        log.debug("GeoDream: %s: %d unused %s tensors", path.name, len(unexpected), what)


def load_single_file(path: Path, config_dir: Path, unet_only: bool = False) -> DiffusionModel:
    """A single-file SD checkpoint (``model.diffusion_model.*``, ``first_stage_model.*``,
    ``cond_stage_model.model.*``) read with the diffusers-format configs in ``config_dir``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                     convert_open_clip_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel

    checkpoint = model_files.read_state_dict(path, SINGLE_FILE, SINGLE_FILE_FIX,
                                             required=["model.diffusion_model.input_blocks.0.0.weight"])
    if "model.diffusion_model.camera_embed.0.weight" in checkpoint:
        raise GeoDreamError(f"GeoDream: '{path}' is not {SINGLE_FILE}: it is MVDream's multi-view model, which "
                            f"plugs into GeoDream Load MVDream. {SINGLE_FILE_FIX}")

    unet_config = UNet2DConditionModel.load_config(config_dir / "unet")
    unet = UNet2DConditionModel.from_config(unet_config)
    _load_converted(unet, convert_ldm_unet_checkpoint(checkpoint, unet_config), "UNet", path)
    model = DiffusionModel(unet, _scheduler(config_dir / "scheduler" / "scheduler_config.json"))
    if unet_only:
        return model
    vae_config = AutoencoderKL.load_config(config_dir / "vae")
    model.vae = AutoencoderKL.from_config(vae_config)
    _load_converted(model.vae, convert_ldm_vae_checkpoint(checkpoint, vae_config), "VAE", path)
    model.text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    text_state = convert_open_clip_checkpoint(model.text_encoder, checkpoint, OPEN_CLIP_PREFIX)
    if not any(k.startswith("text_model.") for k in model.text_encoder.state_dict()):
        # transformers >= 5 dropped the ``text_model.`` level that diffusers' converter still writes
        text_state = {k.removeprefix("text_model."): v for k, v in text_state.items()}
    _load_converted(model.text_encoder, text_state, "text encoder", path)
    tokenizer_dir = config_dir / "tokenizer"
    model.tokenize = _clip_tokenizer(tokenizer_dir) if tokenizer_dir.is_dir() else _open_clip_tokenizer()
    return model


def single_file_config(path: Path) -> Path:
    """The shipped config for a single file: SD 2.1 (768 px, v-prediction) when its name says 768, else 2.1-base."""
    return CONFIGS / ("sd21" if "768" in path.name else "sd21-base")


def load_model(path: Path, config_dir: Path | None = None, unet_only: bool = False) -> DiffusionModel:
    path = Path(path)
    if path.is_dir():
        model = load_diffusers_folder(path, unet_only)
    else:
        config_dir = config_dir or single_file_config(path)
        log.info("GeoDream: reading %s with the configs in %s", path.name, config_dir)
        model = load_single_file(path, config_dir, unet_only)
    for module in (model.unet, model.vae, model.text_encoder):
        if module is not None:
            module.eval().requires_grad_(False)
    return model


def load_guidance(path, lora_path=None, device: torch.device | str = "cpu", half: bool | None = None,
                  config_dir: Path | None = None, lora_config_dir: Path | None = None) -> Guidance:
    """The frozen eps-model (``path``) and, when given, a second UNet for the LoRA branch (``lora_path``), on
    ``device``, in fp16 when ``half`` (None: fp16 exactly on CUDA)."""
    device = torch.device(device)
    dtype = torch.float16 if (device.type == "cuda" if half is None else half) else torch.float32
    base = load_model(path, config_dir)
    if base.prediction_type != "epsilon":
        raise ValueError(f"GeoDream: '{Path(path).name}' predicts '{base.prediction_type}', but VSD's pretrained "
                         "branch needs an epsilon-prediction model: use Stable Diffusion 2.1-base (512 px).")
    lora = load_model(lora_path, lora_config_dir, unet_only=True) if lora_path else base
    name = Path(path).name + (f" + {Path(lora_path).name}" if lora_path else "")
    guidance = Guidance(base, lora, device, dtype, name)
    for module in guidance.modules():
        module.to(device)
        if dtype != torch.float32:  # only a real cast: diffusers warns at every dtype it is given
            module.to(dtype)
    return guidance
