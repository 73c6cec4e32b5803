"""Multi-view prediction (stage 1): a loader per model, one generate node for both. Swapping Zero123++ for MVDream
is swapping the loader; the views (IMAGE) and their cameras (GEODREAM_CAMERAS) downstream stay the same."""
import torch

from ..geodream_ops import cameras, mvdream_pipeline, zero123plus
from ..geodream_ops.object_preprocess import object_on_grey, resize_square
from . import categories
from . import edge_types as T
from . import host

# The authors' settings: Zero123++'s README (28 steps, CFG 4) and MVDream's t2i script (DDIM 50, CFG 7.5).
DEFAULTS = {"zero123plus": {"steps": 28, "guidance": 4.0}, "mvdream": {"steps": 50, "guidance": 7.5}}


class GeoDreamLoadZero123Plus:
    DESCRIPTION = ("Loads Zero123++ (image to 6 views in a 3x2 grid) from a diffusers folder in models/diffusers/, "
                   "e.g. the published sudo-ai/zero123plus-v1.2 (or -v1.1) download, about 5 GB of VRAM in fp16.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.MV_MODEL,)
    RETURN_NAMES = ("mv_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "folder": (host.list_models("diffusers", directories=True), {"tooltip":
                       "A folder under models/diffusers/ holding model_index.json, unet/, vae/, text_encoder/, "
                       "tokenizer/, vision_encoder/, feature_extractor_clip/, feature_extractor_vae/, scheduler/."}),
            "version": (["auto", *zero123plus.VERSIONS], {"default": "auto", "tooltip":
                        "Which release the folder holds; it sets the cameras of the six views (v1.2: elevations "
                        "20/-10, 30 degree field of view; v1.1: 30/-20). auto reads 'v1.1' or 'v1.2' off the folder name."}),
        }}

    def load(self, folder, version):
        if version == "auto":
            found = [v for v in zero123plus.VERSIONS if v in folder.replace("-", ".").replace("_", ".")]
            if len(found) != 1:
                raise ValueError(f"GeoDream: cannot tell the Zero123++ version from the folder name '{folder}'; "
                                 "set version to v1.1 or v1.2.")
            version = found[0]
        return (zero123plus.load_diffusers(host.find_model("diffusers", folder), version),)


class GeoDreamLoadMVDream:
    DESCRIPTION = ("Loads MVDream (text to 4 views around the object) from the published single file "
                   "sd-v2.1-base-4view.pt in models/checkpoints/, or from its diffusers-format port in "
                   "models/diffusers/. About 5 GB of VRAM in fp16.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.MV_MODEL,)
    RETURN_NAMES = ("mv_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        choices = ([f"checkpoints/{name}" for name in host.list_models("checkpoints")]
                   + [f"diffusers/{name}" for name in host.list_models("diffusers", directories=True)])
        return {"required": {
            "model": (choices, {"tooltip": "checkpoints/sd-v2.1-base-4view.pt (the published file) or a diffusers "
                                "folder of the port (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."}),
            "resolution": ("INT", {"default": mvdream_pipeline.RESOLUTION, "min": 16, "max": 1024, "step": 16,
                                   "tooltip": "Side of each view in pixels; a multiple of 64 for the published model. "
                                   "MVDream was trained at 256; other sizes degrade it. Time and memory grow with "
                                   "the square of this."}),
        }}

    def load(self, model, resolution):
        kind, _, name = model.partition("/")
        if kind == "checkpoints":
            loaded = mvdream_pipeline.load_single_file(host.find_model("checkpoints", name))
        elif kind == "diffusers":
            loaded = mvdream_pipeline.load_diffusers(host.find_model("diffusers", name))
        else:
            raise ValueError(f"GeoDream: model must start with checkpoints/ or diffusers/, got '{model}'.")
        multiple = loaded.resolution_multiple
        if resolution % multiple:
            raise ValueError(f"GeoDream: this MVDream model needs a resolution that is a multiple of {multiple}, "
                             f"got {resolution}; 256 is what it was trained at.")
        loaded.resolution = resolution
        return (loaded,)


class GeoDreamMultiViewGenerate:
    DESCRIPTION = ("Predicts views of one object at a fixed camera rig: Zero123++ from an image (6 views), MVDream "
                   "from a prompt (4 views). Outputs the views as an IMAGE batch and their cameras, ready for "
                   "BuildCostVolume. The first run takes the model to the GPU; it is offloaded afterwards.")
    CATEGORY = categories.MULTIVIEW
    RETURN_TYPES = ("IMAGE", T.CAMERAS)
    RETURN_NAMES = ("views", "cameras")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mv_model": (T.MV_MODEL, {"tooltip": "From GeoDream Load Zero123++ or GeoDream Load MVDream."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "MVDream: what to make, e.g. 'a ceramic owl' (', 3d asset' is appended as in MVDream's "
                           "scripts). Ignored by Zero123++, which is conditioned on the image."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                    "MVDream: what to avoid (empty in MVDream's scripts). Ignored by Zero123++."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 500, "tooltip":
                          "Denoising steps; 0 uses the authors' setting (Zero123++ 28, raise to 75 for faces; "
                          "MVDream 50). Time grows linearly: about 0.1-0.2 s per step on a recent GPU."}),
                "guidance": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 50.0, "step": 0.1, "tooltip":
                             "Classifier-free guidance scale; 0 uses the authors' setting (Zero123++ 4, MVDream 7.5; "
                             "GeoDream used 10 for MVDream). 1 turns guidance off and halves the time per step."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 63 - 1, "tooltip":
                         "Same seed, same inputs: the same views."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Zero123++: one image of the object, ideally square and centred."}),
                "mask": ("MASK", {"tooltip": "Zero123++: the object's mask as LoadImage gives it (1 = background). "
                                  "With it the object is cut out, centred, scaled to 75% of the frame and put on the "
                                  "grey Zero123++ expects; without it the image is only padded square with grey."}),
                "elevation": ("FLOAT", {"default": cameras.MVDREAM_ELEVATION, "min": -30.0, "max": 60.0, "step": 0.5,
                              "tooltip": "Degrees. MVDream: the elevation of all four views (15 in GeoDream). "
                              "Zero123++ (both versions) generates at fixed absolute elevations and ignores it."}),
            },
        }

    def generate(self, mv_model, prompt, negative_prompt, steps, guidance, seed, image=None, mask=None,
                 elevation=cameras.MVDREAM_ELEVATION):
        defaults = DEFAULTS[mv_model.kind]
        steps = steps or defaults["steps"]
        guidance = guidance or defaults["guidance"]
        if mv_model.kind == "zero123plus":
            condition = self._object_image(image, mask, mv_model.tile_size)
            rig = cameras.zero123plus_rig(mv_model.version)
        else:
            if not prompt.strip():
                raise ValueError("GeoDream: MVDream needs a prompt; type what to make, e.g. 'a ceramic owl'.")
            rig = cameras.mvdream_rig(elevation)

        progress = host.Progress(steps, f"GeoDream {mv_model.kind}")

        def on_step(step):
            progress.update(step + 1)
            host.check_interrupt()

        device = host.device()
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        for module in mv_model.modules():
            module.to(device, dtype)
        try:
            if mv_model.kind == "zero123plus":
                views = mv_model.generate(condition, steps, guidance, seed, on_step)
            else:
                views = mv_model.generate(prompt, negative_prompt, rig, steps, guidance, seed, on_step)
        finally:
            progress.close()
            for module in mv_model.modules():
                module.to(host.offload_device())
            host.soft_empty_cache()
        return (views, rig)

    @staticmethod
    def _object_image(image, mask, size):
        if image is None:
            raise ValueError("GeoDream: Zero123++ needs an image of the object; connect one to 'image' "
                             "(and LoadImage's MASK to 'mask' if it has a transparent background).")
        if image.shape[0] != 1:
            raise ValueError(f"GeoDream: Zero123++ takes one image, got a batch of {image.shape[0]}.")
        if mask is not None:
            mask = mask.reshape(-1, *mask.shape[-2:])[0]
        return resize_square(object_on_grey(image[0], mask), size)


NODES = {
    "GeoDreamLoadZero123Plus": (GeoDreamLoadZero123Plus, "GeoDream Load Zero123++"),
    "GeoDreamLoadMVDream": (GeoDreamLoadMVDream, "GeoDream Load MVDream"),
    "GeoDreamMultiViewGenerate": (GeoDreamMultiViewGenerate, "GeoDream Multi-View Generate"),
}
