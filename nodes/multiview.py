"""Multi-view prediction (stage 1): a loader per model, one generate node for all three (Zero123++, MVDream, and
Zero123-XL / Stable Zero123 with One-2-3-45's 40-view recipe). Swapping models is swapping the loader; the views (IMAGE, on white), their cameras (GEODREAM_CAMERAS) and masks downstream stay the
same. Expand Views runs Zero123++ on a view set, as the release turns MVDream's 4 views into its 14."""
import logging

import torch

from ..geodream_ops import cameras
from ..geodream_ops.multiview import ldm_schedule, mvdream_pipeline, view_recipe, zero123, zero123_recipe, zero123plus
from ..geodream_ops.prior import release_frame
from ..geodream_ops.errors import GeoDreamError
from ..geodream_ops.images import resize_views
from ..geodream_ops.multiview.matting import METHODS as MATTING_METHODS
from ..geodream_ops.multiview.matting import U2NET_FILE, matte_views, resolve_method, zero123plus_first_pass
from ..geodream_ops.multiview.object_preprocess import GREY, object_on_grey, resize_square
from ..geodream_ops.tensor_checks import require_finite_views
from . import categories
from . import edge_types as T
from . import host
from . import resume as resuming

log = logging.getLogger("GeoDream")

PRECISIONS = {"auto": None, "fp16": torch.float16, "fp32": torch.float32}
# As GeoDream's release ran each model for its volumes (see each pipeline's RELEASE_* constants).
DEFAULTS = {kind: {"steps": module.RELEASE_STEPS, "guidance": module.RELEASE_GUIDANCE,
                   "dtype": PRECISIONS[module.RELEASE_PRECISION]}
            for kind, module in (("zero123plus", zero123plus), ("mvdream", mvdream_pipeline), ("zero123", zero123))}

MATTING_TOOLTIP = ("How the background is removed before the views go on white (alpha <= 128/255 becomes pure white, "
                   "as the release feeds its 3D prior). rembg: U²-Net as the release ran it (fed BGR, edges darkened "
                   "by rembg's cut-out), read from models/rembg/u2net.onnx (rembg's file; needs onnxruntime). "
                   "flat background: no "
                   "model, the border's colour connected to the border; always right for Zero123++'s flat grey, fine "
                   "for MVDream on a plain backdrop. auto: rembg when that file is there, else flat background. "
                   "none: views as generated (e.g. to connect a better remover's mask to Build Cost Volume).")
PRECISION_TOOLTIP = ("Number format on a GPU (the CPU always runs fp32). auto: as the release ran each model, "
                     "MVDream fp32 (about 6 GB of VRAM) and Zero123++ fp16 (about 5 GB). fp16 halves MVDream's memory "
                     "and runs faster, but its views drift from the release's fp32 sampling.")


def u2net_path():
    """rembg's U²-Net in models/rembg/ when it is there, else None."""
    for root in host.model_folders("rembg"):
        if (root / U2NET_FILE).is_file():
            return root / U2NET_FILE
    return None


def matte(views, method):
    """Views on white and their masks (1 = background) by ``method`` (matting.METHODS)."""
    views, masks, used = matte_views(views, method, u2net_path(), host.check_interrupt)
    log.info("GeoDream: %d views put on white by %s matting", len(views), used)
    return views, masks


def model_dtype(kind: str, precision: str) -> torch.dtype:
    if host.device().type != "cuda":
        return torch.float32
    return PRECISIONS[precision] or DEFAULTS[kind]["dtype"]


def run_on_device(mv_model, dtype, desc, steps, generate):
    """Moves the model to the device in ``dtype`` once ComfyUI has made room for it (host.on_device), runs
    ``generate(on_step)`` with a progress bar and interrupts, and offloads the model afterwards whatever happens."""
    progress = host.Progress(steps, desc)

    def on_step(step):
        progress.update(step + 1)
        host.check_interrupt()

    try:
        with host.on_device(mv_model.modules(), dtype):
            return generate(on_step)
    finally:
        progress.close()


class GeoDreamLoadZero123Plus:
    DESCRIPTION = ("Loads Zero123++ (image to 6 views in a 3x2 grid) from a diffusers folder in models/diffusers/, "
                   "e.g. the published sudo-ai/zero123plus-v1.2 (or -v1.1) download, about 5 GB of VRAM in fp16.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.MV_MODEL,)
    RETURN_NAMES = ("mv_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        folders = host.model_choices("GeoDreamLoadZero123Plus", "folder", host.list_models("diffusers", directories=True))
        return {"required": {
            "folder": (folders, {"tooltip":
                       "A folder under models/diffusers/ holding model_index.json, unet/, vae/, text_encoder/, "
                       "tokenizer/, vision_encoder/, feature_extractor_clip/, feature_extractor_vae/, scheduler/. "
                       "Zero123++ folders are listed first; `python -m headless.models download zero123plus-v1.2` "
                       "fetches the published one (a name listed but not downloaded says so when run)."}),
            "version": (["auto", *zero123plus.VERSIONS], {"default": "auto", "tooltip":
                        "Which release the folder holds; it sets the cameras of the six views (v1.2: elevations "
                        "20/-10, 30 degree field of view; v1.1: 30/-20). auto reads 'v1.1' or 'v1.2' off the folder name."}),
        }}

    @classmethod
    def IS_CHANGED(cls, folder, **_):
        return host.model_fingerprint("diffusers", folder)

    def load(self, folder, version):
        if version == "auto":
            found = [v for v in zero123plus.VERSIONS if v in folder.replace("-", ".").replace("_", ".")]
            if len(found) != 1:
                raise ValueError(f"GeoDream: cannot tell the Zero123++ version from the folder name '{folder}'; "
                                 "set version to v1.1 or v1.2.")
            version = found[0]
        return (zero123plus.load_diffusers(host.find_model("diffusers", folder, "GeoDreamLoadZero123Plus", "folder"),
                                           version),)


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
        present = ([f"checkpoints/{name}" for name in host.list_models("checkpoints")]
                   + [f"diffusers/{name}" for name in host.list_models("diffusers", directories=True)])
        choices = host.model_choices("GeoDreamLoadMVDream", "model", present)
        return {"required": {
            "model": (choices, {"tooltip": "checkpoints/sd-v2.1-base-4view.pt (the published file; `python -m "
                                "headless.models download mvdream-sd21-4view` fetches it) or a diffusers folder of "
                                "the port (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."}),
            "resolution": ("INT", {"default": mvdream_pipeline.RESOLUTION, "min": 16, "max": 1024, "step": 16,
                                   "tooltip": "Side of each view in pixels; a multiple of 64 for the published model. "
                                   "MVDream was trained at 256; other sizes degrade it. Time and memory grow with "
                                   "the square of this."}),
        }}

    @classmethod
    def IS_CHANGED(cls, model, **_):
        return host.model_fingerprint(*model.partition("/")[::2])

    def load(self, model, resolution):
        kind, _, name = model.partition("/")
        if kind == "checkpoints":
            loaded = mvdream_pipeline.load_single_file(host.find_model(kind, name, "GeoDreamLoadMVDream", "model"))
        elif kind == "diffusers":
            loaded = mvdream_pipeline.load_diffusers(host.find_model(kind, name, "GeoDreamLoadMVDream", "model"))
        else:
            raise ValueError(f"GeoDream: model must start with checkpoints/ or diffusers/, got '{model}'.")
        multiple = loaded.resolution_multiple
        if resolution % multiple:
            raise ValueError(f"GeoDream: this MVDream model needs a resolution that is a multiple of {multiple}, "
                             f"got {resolution}; 256 is what it was trained at.")
        loaded.resolution = resolution
        return (loaded,)


class GeoDreamLoadZero123:
    DESCRIPTION = ("Loads Zero123-XL or Stable Zero123 (image + relative camera to a view; GeoDream's release's image "
                   "path) from the published single file: zero123-xl.ckpt or stable_zero123.ckpt in "
                   "models/checkpoints/ (the file core ComfyUI's Image Only Checkpoint Loader reads too), or the same "
                   "tensors as .safetensors. Multi-View Generate then runs One-2-3-45's 40-view recipe with it. About "
                   "4 GB of VRAM in fp16.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.MV_MODEL,)
    RETURN_NAMES = ("mv_model",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        present = ([f"checkpoints/{name}" for name in host.list_models("checkpoints")]
                   + [f"geodream/{name}" for name in host.list_models("geodream")])
        return {"required": {
            "model": (host.model_choices("GeoDreamLoadZero123", "model", present), {"tooltip":
                      "checkpoints/zero123-xl.ckpt (the release's default; `python -m headless.models download "
                      "zero123-xl`) or checkpoints/stable_zero123.ckpt (the release's alternative; its licence must be "
                      "accepted on Hugging Face first). .safetensors of the same tensors load too."}),
            "variant": (["auto", *zero123.VARIANTS], {"default": "auto", "tooltip":
                        "Which model the file holds; it sets the 4th camera term (Zero123-XL 0, Stable Zero123 pi/2, "
                        "as the release and core ComfyUI do). A wrong choice gives views at wrong angles. auto reads "
                        "it off the file name (stable_zero123 -> Stable Zero123, other zero123 names -> Zero123-XL)."}),
            "view_set": (list(zero123_recipe.VIEW_SETS), {"default": zero123_recipe.VIEW_SETS[0], "tooltip":
                         "Which of the recipe's 40 views Multi-View Generate returns. release: the 31 the release's "
                         "prior reads (the input's own view and 30 neighbours), so Build Cost Volume sees what the "
                         "release's did. all 40: every view, e.g. to look at them or pick your own."}),
            "resolution": ("INT", {"default": zero123.RESOLUTION, "min": 16, "max": 1024, "step": 8, "tooltip":
                           "Side of the input and of each view in pixels: a multiple of the model's total downsampling "
                           "(64 for both published models; checked as the file loads). Both were trained at 256; other "
                           "sizes degrade them. Time and memory grow with the square of this."}),
        }}

    def load(self, model, variant, view_set, resolution):
        kind, _, name = model.partition("/")
        if kind not in ("checkpoints", "geodream"):
            raise GeoDreamError(f"GeoDream: model must start with checkpoints/ or geodream/, got '{model}'.")
        if variant == "auto":
            variant = zero123.variant_from_name(name)
            if variant is None:
                raise GeoDreamError(f"GeoDream: cannot tell Zero123-XL from Stable Zero123 by the file name '{name}'; "
                                    "set variant.")
        zero123_recipe.select(view_set)
        loaded = zero123.load_checkpoint(host.find_model(kind, name, "GeoDreamLoadZero123", "model"), variant)
        multiple = loaded.resolution_multiple
        if resolution % multiple:
            raise GeoDreamError(f"GeoDream: this Zero123 model needs a resolution that is a multiple of {multiple}, "
                                f"got {resolution}; 256 is what it was trained at.")
        loaded.view_set, loaded.resolution = view_set, resolution
        return (loaded,)


class GeoDreamMultiViewGenerate:
    DESCRIPTION = ("Predicts views of one object at a fixed camera rig: Zero123++ from an image (6 views), MVDream "
                   "from a prompt (4 views), Zero123-XL / Stable Zero123 from an image (One-2-3-45's 40 views in two "
                   "stages, as GeoDream's release). Outputs the views on white as the release feeds its 3D prior (background "
                   "removed, see matting), their cameras, and each view's background mask to check or fix. The "
                   "first run takes the model to the GPU; it is offloaded afterwards.")
    CATEGORY = categories.MULTIVIEW
    RETURN_TYPES = ("IMAGE", T.CAMERAS, "MASK")
    RETURN_NAMES = ("views", "cameras", "mask")
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "mv_model": (T.MV_MODEL, {"tooltip": "From GeoDream Load Zero123++, Load MVDream or Load Zero123."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                           "MVDream: what to make, e.g. 'a ceramic owl' (', 3d asset' is appended as in MVDream's "
                           "scripts). Ignored by Zero123++, which is conditioned on the image."}),
                "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                    "MVDream: what to avoid (empty in MVDream's scripts). Ignored by Zero123++."}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 500, "tooltip":
                          "Denoising steps; 0 uses the release's (Zero123++ 75, MVDream 50, Zero123 75 for the first "
                          "stage and 50 for the neighbours; ldm's DDIM makes 75 into 77). A value here sets both "
                          "Zero123 stages. Time grows linearly, "
                          "about 0.1-0.2 s per step on a recent GPU; fewer steps (e.g. Zero123++'s own 28) are "
                          "faster but give blurrier, less consistent views, and the 3D prior inherits that. MVDream "
                          "steps as MVDream's own DDIM (ldm): a count that does not divide 1000 runs one step more "
                          "(30 runs 31, from t = 991)."}),
                "guidance": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 50.0, "step": 0.1, "tooltip":
                             "Classifier-free guidance scale; 0 uses the release's (Zero123++ 4, MVDream 10, Zero123 3). 1 "
                             "turns guidance off and halves the time per step, but the views follow the prompt "
                             "or image far less."}),
                "seed": resuming.seed_input("the views' diffusion noise", 2 ** 63 - 1, upstream=True),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "Zero123++ / Zero123: one image of the object, ideally square and "
                                    "centred."}),
                "mask": ("MASK", {"tooltip": "Zero123++ / Zero123: the object's mask as LoadImage gives it (1 = "
                                  "background), or any background remover's. With it the object is cut out, centred, "
                                  "scaled to 75% of the frame and put on the grey Zero123++ expects (white for "
                                  "Zero123, as the release); without it the image is only padded square with that "
                                  "colour, so a photo with a busy background gives views of the background too."}),
                "elevation": ("FLOAT", {"default": cameras.MVDREAM_ELEVATION, "min": -30.0, "max": 60.0, "step": 0.5,
                              "tooltip": "Degrees. MVDream: the elevation of all four views (15 in GeoDream). "
                              "Zero123++ (both versions) generates at fixed absolute elevations and ignores it."}),
                "matting": (list(MATTING_METHODS), {"default": "auto", "tooltip": MATTING_TOOLTIP
                            + " Zero123: auto is none, as the release feeds Zero123's views (on white) as generated."}),
                "precision": (list(PRECISIONS), {"default": "auto", "tooltip": PRECISION_TOOLTIP}),
                "input_elevation": ("FLOAT", {"default": zero123_recipe.RELEASE_INPUT_ELEVATION, "min": -60.0,
                                    "max": 80.0, "step": 1.0, "tooltip":
                                    "Zero123: the input photo's camera elevation in degrees. The release takes 0 "
                                    "(polar 90) without estimating it; at 15 or more One-2-3-45's recipe takes the "
                                    "views below instead of above. A wrong value tilts every camera by the error, so "
                                    "the 3D prior comes out sheared or smeared. Ignored by the other models."}),
            },
        }

    def generate(self, mv_model, prompt, negative_prompt, steps, guidance, seed, image=None, mask=None,
                 elevation=cameras.MVDREAM_ELEVATION, matting="auto", precision="auto",
                 input_elevation=zero123_recipe.RELEASE_INPUT_ELEVATION):
        defaults = DEFAULTS[mv_model.kind]
        guidance = guidance or defaults["guidance"]
        if mv_model.kind == "zero123":
            return self._zero123(mv_model, steps, guidance, seed, image, mask, matting, precision, input_elevation)
        steps = steps or defaults["steps"]
        if mv_model.kind == "zero123plus":
            condition = self._object_image(image, mask, mv_model.tile_size)
            rig = cameras.zero123plus_rig(mv_model.version)
        else:
            if not prompt.strip():
                raise ValueError("GeoDream: MVDream needs a prompt; type what to make, e.g. 'a ceramic owl'.")
            rig = cameras.mvdream_rig(elevation)

        def generate(on_step):
            if mv_model.kind == "zero123plus":
                return mv_model.generate(condition, steps, guidance, seed, on_step)
            return mv_model.generate(prompt, negative_prompt, rig, steps, guidance, seed, on_step)

        ticks = len(ldm_schedule.ddim_timesteps(steps)) if mv_model.kind == "mvdream" else steps
        views = run_on_device(mv_model, model_dtype(mv_model.kind, precision), f"GeoDream {mv_model.kind}", ticks,
                              generate)
        if mv_model.kind == "zero123plus" and resolve_method(matting, u2net_path()) == "rembg":
            views = zero123plus_first_pass(views, u2net_path())  # the release's rembg pass on the whole grid
        views, masks = matte(views, matting)
        require_finite_views(views, "Multi-View Generate's views")
        return (views, rig, masks)

    def _zero123(self, mv_model, steps, guidance, seed, image, mask, matting, precision, input_elevation):
        """One-2-3-45's 40 views (zero123_recipe), the chosen subset with its cameras."""
        first, neighbours = (steps, steps) if steps else (zero123.RELEASE_STEPS, zero123.RELEASE_NEIGHBOUR_STEPS)
        condition = self._object_image(image, mask, mv_model.resolution, 1.0, "Zero123")
        keep = zero123_recipe.select(mv_model.view_set)

        def generate(on_step):
            return zero123_recipe.run(mv_model, condition, first, neighbours, guidance, seed, input_elevation, on_step)

        views = run_on_device(mv_model, model_dtype("zero123", precision), f"GeoDream {mv_model.variant}",
                              zero123_recipe.total_steps(first, neighbours, input_elevation), generate)
        views, masks = matte(views[keep], "none" if matting == "auto" else matting)
        require_finite_views(views, "Multi-View Generate's views")
        return (views, zero123_recipe.recipe_cameras(input_elevation)[keep], masks)

    @staticmethod
    def _object_image(image, mask, size, background=GREY, name="Zero123++"):
        if image is None:
            raise GeoDreamError(f"GeoDream: {name} needs an image of the object; connect one to 'image' "
                                "(and LoadImage's MASK to 'mask' if it has a transparent background).")
        if image.ndim != 4 or image.shape[0] == 0 or 0 in image.shape[1:3]:
            raise GeoDreamError(f"GeoDream: the image input is empty ({tuple(image.shape)}); connect an image.")
        if image.shape[0] != 1:
            raise GeoDreamError(f"GeoDream: {name} takes one image, got a batch of {image.shape[0]} (a multi-frame "
                                "file gives one per frame); pick one, e.g. with core Image From Batch.")
        if mask is not None:
            if mask.numel() == 0:
                raise GeoDreamError("GeoDream: the mask input is empty; connect LoadImage's MASK or leave it out.")
            mask = mask.reshape(-1, *mask.shape[-2:])[0]
        square = object_on_grey(image[0], mask, background=background)
        if square.shape[0] < size:
            log.warning("GeoDream: the object fills a %d px square, smaller than %s's %d px input; it is "
                        "upscaled and the views will be blurry. Use a larger image.", square.shape[0], name, size)
        return resize_square(square, size)


class GeoDreamExpandViews:
    DESCRIPTION = ("Adds Zero123++ views to a view set, as GeoDream's release does for text to 3D: Zero123++ (v1.1 in "
                   "the release) runs on each view and the chosen tiles join the set with their cameras (Zero123++'s "
                   "published rig, relative to the view they came from). The default recipe turns MVDream's 4 views "
                   "into the release's 14 (4 + 10); all views come out at 256 px on white, with their masks.")
    CATEGORY = categories.MULTIVIEW
    RETURN_TYPES = ("IMAGE", T.CAMERAS, "MASK")
    RETURN_NAMES = ("views", "cameras", "mask")
    FUNCTION = "expand"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "mv_model": (T.MV_MODEL, {"tooltip": "Zero123++ from GeoDream Load Zero123++; the release used v1.1 "
                                      "(its rig, elevations 30/-20, is the one its pose table has)."}),
            "views": ("IMAGE", {"tooltip": "The views to expand, e.g. Multi-View Generate's MVDream views on white "
                                "(the release conditions Zero123++ on exactly those)."}),
            "cameras": (T.CAMERAS, {"tooltip": "The cameras of those views, one per view."}),
            "recipe": (list(view_recipe.RECIPES), {"default": view_recipe.RECIPES[0], "tooltip":
                       "release 14 views: from MVDream's front, left, back and right views, Zero123++ tiles "
                       "{none}, {1,3,4,5,6}, {6}, {1,2,3,6}, as the release picks them (3 Zero123++ runs). "
                       "all 6 per view: every tile of every view (one run per view; any view set)."}),
            "source_cameras": (list(view_recipe.SOURCE_CAMERAS), {"default": view_recipe.SOURCE_CAMERAS[0],
                               "tooltip": "Cameras of the input views in the output. release pose table: as the "
                               "release's pose.json has MVDream's views, at elevation 0 (though generated at 15), "
                               "radius 1.2, focal 280 px. as given: the cameras connected here."}),
            "steps": ("INT", {"default": 0, "min": 0, "max": 500, "tooltip":
                      "Zero123++ denoising steps per view; 0 uses the release's 75. Fewer are faster (time is "
                      "linear, three runs for the release recipe) but give less consistent tiles."}),
            "guidance": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 50.0, "step": 0.1, "tooltip":
                         "Classifier-free guidance; 0 uses the release's 4. 1 halves the time but follows the "
                         "view far less."}),
            "seed": resuming.seed_input("the added views' diffusion noise (view k is expanded with seed + k)",
                                        2 ** 63 - 1, upstream=True),
        }, "optional": {
            "matting": (list(MATTING_METHODS), {"default": "auto", "tooltip": MATTING_TOOLTIP}),
            "precision": (list(PRECISIONS), {"default": "auto", "tooltip": PRECISION_TOOLTIP}),
        }}

    def expand(self, mv_model, views, cameras, recipe, source_cameras, steps, guidance, seed, matting="auto",
               precision="auto"):
        if mv_model.kind != "zero123plus":
            raise GeoDreamError("GeoDream: Expand Views runs Zero123++; connect GeoDream Load Zero123++ (v1.1 as in "
                                "the release) to mv_model.")
        if views.ndim != 4 or views.shape[0] != len(cameras):
            raise GeoDreamError(f"GeoDream: {views.shape[0] if views.ndim == 4 else 'no'} views for {len(cameras)} "
                                "cameras; give one camera per view.")
        if source_cameras not in view_recipe.SOURCE_CAMERAS:
            raise GeoDreamError(f"GeoDream: unknown source_cameras {source_cameras!r}; use one of "
                                f"{view_recipe.SOURCE_CAMERAS}.")
        selection = view_recipe.tile_selection(recipe, len(cameras))
        if source_cameras == view_recipe.SOURCE_CAMERAS[0]:
            cameras = view_recipe.release_source_cameras(cameras)
        steps = steps or DEFAULTS["zero123plus"]["steps"]
        guidance = guidance or DEFAULTS["zero123plus"]["guidance"]
        sources = [k for k, tiles in enumerate(selection) if tiles]

        def generate(on_step):
            tiles = {}
            for run, k in enumerate(sources):
                condition = resize_square(object_on_grey(views[k, ..., :3]), mv_model.tile_size)
                tiles[k] = mv_model.generate(condition, steps, guidance, seed + k,
                                             lambda step, run=run: on_step(run * steps + step))
            return tiles

        grids = run_on_device(mv_model, model_dtype("zero123plus", precision), "GeoDream Zero123++ expansion",
                              steps * len(sources), generate)
        size = release_frame.RELEASE_IMAGE_SIZE
        # With U²-Net, the release's two passes: rembg on each whole grid, its tiles resized and read back on black
        # (img_to_6mv.py); the second pass is matte's below, with the MVDream views' own second pass.
        rembg = resolve_method(matting, u2net_path()) == "rembg"
        parts = []
        for k in range(len(selection)):
            parts.append(resize_views(views[k:k + 1, ..., :3], size))
            if k in grids:
                chosen = list(selection[k])
                parts.append(zero123plus_first_pass(grids[k], u2net_path(), size)[chosen] if rembg
                             else resize_views(grids[k][chosen], size))
        out_views, masks = matte(torch.cat(parts), matting)
        require_finite_views(out_views, "Expand Views' views")
        return (out_views, view_recipe.expanded_cameras(cameras, selection, mv_model.version), masks)


NODES = {
    "GeoDreamExpandViews": (GeoDreamExpandViews, "GeoDream Expand Views (Zero123++)"),
    "GeoDreamLoadZero123Plus": (GeoDreamLoadZero123Plus, "GeoDream Load Zero123++"),
    "GeoDreamLoadMVDream": (GeoDreamLoadMVDream, "GeoDream Load MVDream"),
    "GeoDreamLoadZero123": (GeoDreamLoadZero123, "GeoDream Load Zero123 (XL / Stable)"),
    "GeoDreamMultiViewGenerate": (GeoDreamMultiViewGenerate, "GeoDream Multi-View Generate"),
}
