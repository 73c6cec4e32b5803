"""The text side of Uni3D: the text tower of open_clip's EVA02-E-14-plus (the CLIP model Uni3D was aligned to),
read from a local ``open_clip_pytorch_model.bin`` (timm/eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k),
and the prompt templates of Uni3D's zero-shot evaluation (data/templates.json, ``modelnet40_64``)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import model_files
from ..errors import GeoDreamError

log = logging.getLogger("GeoDream")

CLIP_MODEL = "EVA02-E-14-plus"

# Uni3D embeds a class name through each template, normalises, averages and normalises again.
UNI3D_TEMPLATES = (
    "a point cloud model of {}.", "There is a {} in the scene.", "There is the {} in the scene.",
    "a photo of a {} in the scene.", "a photo of the {} in the scene.", "a photo of one {} in the scene.",
    "itap of a {}.", "itap of my {}.", "itap of the {}.", "a photo of a {}.", "a photo of my {}.",
    "a photo of the {}.", "a photo of one {}.", "a photo of many {}.", "a good photo of a {}.",
    "a good photo of the {}.", "a bad photo of a {}.", "a bad photo of the {}.", "a photo of a nice {}.",
    "a photo of the nice {}.", "a photo of a cool {}.", "a photo of the cool {}.", "a photo of a weird {}.",
    "a photo of the weird {}.", "a photo of a small {}.", "a photo of the small {}.", "a photo of a large {}.",
    "a photo of the large {}.", "a photo of a clean {}.", "a photo of the clean {}.", "a photo of a dirty {}.",
    "a photo of the dirty {}.", "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of a {}.",
    "a dark photo of the {}.", "a photo of a hard to see {}.", "a photo of the hard to see {}.",
    "a low resolution photo of a {}.", "a low resolution photo of the {}.", "a cropped photo of a {}.",
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a jpeg corrupted photo of a {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of a {}.",
    "a blurry photo of the {}.", "a pixelated photo of a {}.", "a pixelated photo of the {}.",
    "a black and white photo of the {}.", "a black and white photo of a {}", "a plastic {}.", "the plastic {}.",
    "a toy {}.", "the toy {}.", "a plushie {}.", "the plushie {}.", "a cartoon {}.", "the cartoon {}.",
    "an embroidered {}.", "the embroidered {}.", "a painting of the {}.", "a painting of a {}.",
)
TEMPLATE_SETS = {"prompt as written": ("{}",), "uni3d 64 templates": UNI3D_TEMPLATES}


class TextEncoder:
    """A CLIP text tower and its tokenizer: prompts -> unit-length embeddings in the CLIP space."""

    def __init__(self, tower: torch.nn.Module, tokenizer, model_name: str):
        self.tower, self.tokenizer, self.model_name = tower, tokenizer, model_name

    @property
    def device(self) -> torch.device:
        return next(self.tower.parameters()).device

    @torch.no_grad()
    def encode(self, prompts: list[str], templates=TEMPLATE_SETS["prompt as written"]) -> torch.Tensor:
        """[P, D]: for each prompt, the normalised mean of its normalised template embeddings (as Uni3D does)."""
        embeddings = []
        for prompt in prompts:
            tokens = self.tokenizer([t.format(prompt) for t in templates]).to(self.device)
            per_template = F.normalize(self.tower(tokens).float(), dim=-1)
            embeddings.append(F.normalize(per_template.mean(dim=0), dim=-1))
        return torch.stack(embeddings)


CLIP_FILE = "the EVA02-E-14-plus open_clip checkpoint (its text tower)"
CLIP_FIX = ("Pick open_clip_pytorch_model.bin of Hugging Face timm/eva02_enormous_patch14_plus_clip_224."
            "laion2b_s9b_b144k in models/geodream/ or models/clip/; if that is the file, download it again.")


def _read_text_weights(path: Path) -> dict[str, torch.Tensor]:
    """The text tower's weights (keys without the ``text.`` prefix) of an open_clip checkpoint, in either of
    open_clip's layouts. Memory-mapped, so the image tower's gigabytes are never read."""
    from open_clip.model import convert_to_custom_text_state_dict

    state = model_files.read_state_dict(path, CLIP_FILE, CLIP_FIX, keep=lambda key: not key.startswith("visual."))
    state = convert_to_custom_text_state_dict(state)
    return {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}


def load_text_encoder(path, model_name: str = CLIP_MODEL, device="cpu", dtype=torch.float32) -> TextEncoder:
    """The text tower of open_clip model ``model_name`` with the weights in ``path``. Built from open_clip's config
    registry by its own text-tower builder: the full CLIP would also build EVA02-E's 4.4B-parameter image tower,
    which the score never uses."""
    import open_clip
    from open_clip.model import _build_text_tower, convert_weights_to_lp

    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(f"open_clip does not know the model '{model_name}'; update open_clip_torch")
    with torch.device(device):
        tower = _build_text_tower(config["embed_dim"], config["text_cfg"], quick_gelu=config.get("quick_gelu", False),
                                  cast_dtype=dtype if dtype != torch.float32 else None)
    weights = _read_text_weights(Path(path))
    if not weights:
        raise GeoDreamError(f"GeoDream: '{path}' is not {CLIP_FILE}: it holds no CLIP text tower. {CLIP_FIX}")
    model_files.load_weights(tower, weights, path, CLIP_FILE, CLIP_FIX)
    log.info("GeoDream: %s text tower loaded from %s", model_name, Path(path).name)
    tower = tower.to(device).eval().requires_grad_(False)
    if dtype != torch.float32:
        convert_weights_to_lp(tower, dtype)  # as open_clip does for half precision: layer norms stay fp32
    return TextEncoder(tower, open_clip.get_tokenizer(model_name), model_name)


def save_text_tower(source, target, note: dict[str, str]) -> list[str]:
    """Write the text tower of an open_clip checkpoint (every tensor outside ``visual.``, names unchanged) to one
    .safetensors file that ``load_text_encoder`` reads as it reads the full checkpoint; EVA02-E-14-plus's image
    tower (~4.4B parameters, most of the file) is dropped. ``note`` (source, checksum) and what was dropped go into
    the file's metadata. Returns the dropped tensor names."""
    from safetensors.torch import save_file

    state = torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    state = state.get("state_dict", state)
    is_image = [k for k in state if k.removeprefix("module.").startswith("visual.")]
    kept = {k: v.clone() for k, v in state.items() if k not in set(is_image)}  # clone: no storage shared with visual
    dropped = sum(state[k].numel() for k in is_image)
    save_file(kept, str(target), metadata={**note, "geodream_kept": "CLIP text tower (every tensor outside visual.)",
                                           "geodream_dropped": f"{len(is_image)} visual.* tensors, {dropped:,} "
                                                               "parameters: the image tower, which Uni3D never uses"})
    return is_image
