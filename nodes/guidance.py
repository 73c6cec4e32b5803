"""Loader of the score-distillation guidance: Stable Diffusion 2.1-base, optionally with SD 2.1 for VSD's LoRA."""
from ..geodream_ops.guidance.sd_guidance import load_guidance
from . import categories
from . import edge_types as T
from . import host

SAME = "(same as model)"


def _choices(input_name: str) -> list[str]:
    folders = [f"diffusers/{n}" for n in host.list_models("diffusers", directories=True)]
    files = [f"checkpoints/{n}" for n in host.list_models("checkpoints")]
    return host.model_choices("GeoDreamLoadVSDGuidance", input_name, folders + files)


def _resolve(choice: str, input_name: str):
    kind, _, name = choice.partition("/")
    if kind not in ("diffusers", "checkpoints") or not name:
        raise ValueError(f"GeoDream: '{choice}' is not a model choice; pick a diffusers folder or a checkpoint file.")
    return host.find_model(kind, name, "GeoDreamLoadVSDGuidance", input_name)


class GeoDreamLoadVSDGuidance:
    DESCRIPTION = ("Loads the 2D diffusion prior for score distillation: Stable Diffusion 2.1-base (epsilon "
                   "prediction) as a diffusers folder in models/diffusers/ or a single .safetensors/.ckpt in "
                   "models/checkpoints/. VSD trains a small camera-conditioned LoRA on top of it; GeoDream's release "
                   "puts that LoRA on a second model, SD 2.1 (768, v-prediction) -- pick it as lora_model, or leave "
                   "the LoRA on the same model to save ~1.7 GB of VRAM.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (_choices("model"), {"tooltip": "Stable Diffusion 2.1-base: a diffusers folder (models/diffusers/) "
                                          "or a single file (models/checkpoints/, e.g. v2-1_512-ema-pruned.safetensors). "
                                          "`python -m headless.models download sd21-base` fetches it."}),
            "lora_model": ([SAME] + _choices("lora_model"), {"default": SAME, "tooltip":
                           "The model VSD's LoRA adapts. The release uses SD 2.1 (768, v-prediction; a single file "
                           "whose name contains 768 is read as that). Same model: less VRAM, slightly different results."}),
            "precision": (["auto", "fp16", "fp32"], {"default": "auto", "tooltip":
                          "auto: fp16 on a GPU, fp32 on the CPU. fp16 halves VRAM (~5 GB for SD 2.1-base)."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, lora_model, **_):
        return "".join(host.model_fingerprint(*choice.partition("/")[::2]) for choice in (model, lora_model))

    @host.needs_autograd
    def load(self, model, lora_model, precision):
        path = _resolve(model, "model")
        lora_path = None if lora_model == SAME else _resolve(lora_model, "lora_model")
        # Loaded where ComfyUI offloads models; the stages that use it move it to the GPU (host.on_device).
        half = host.device().type == "cuda" if precision == "auto" else precision == "fp16"
        return (load_guidance(path, lora_path, host.offload_device(), half),)


NODES = {"GeoDreamLoadVSDGuidance": (GeoDreamLoadVSDGuidance, "GeoDream Load VSD Guidance")}
