"""The 3D prior: load SparseNeuS lod0, build the cost volume from views + cameras, look at it as a mesh, save it."""
import math
from pathlib import Path

import torch

from ..geodream_ops.prior import marching_cubes, prior_checkpoint, release_frame
from ..geodream_ops import model_files
from ..geodream_ops.prior.cost_volume import CostVolume, check_volume
from ..geodream_ops.prior.geometry_decoder import LATENT_CHANNELS
from ..geodream_ops.tensor_checks import require_finite, require_finite_views, require_shape
from ..geodream_ops.errors import GeoDreamError
from ..geodream_ops.multiview.matting import views_on_white
from ..geodream_ops.prior.model import NORM_STATISTICS, build_cost_volume, build_steps, cost_volume_from_release
from ..geodream_ops.prior.sparse_conv import BACKENDS
from . import categories
from . import edge_types as T
from . import host


class GeoDreamLoadPrior:
    DESCRIPTION = ("Loads GeoDream's 3D prior: the SparseNeuS lod0 networks of One-2-3-45 (2D feature pyramid, sparse "
                   "3D CNN, geometry decoder) from models/geodream/ckpt_215000.pth (the One-2-3-45 release's "
                   "checkpoint). Its texture decoder is not used.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.PRIOR_MODEL,)
    RETURN_NAMES = ("prior",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        names = host.model_choices("GeoDreamLoadPrior", "ckpt_name", host.list_models("geodream"))
        return {"required": {"ckpt_name": (names, {"default": prior_checkpoint.RELEASE_NAME, "tooltip":
                "The SparseNeuS lod0 checkpoint in models/geodream/ (ckpt_215000.pth, ~5 MB of weights in a larger "
                "file; `python -m headless.models download sparseneus-lod0` fetches it). Loads in seconds; the "
                "networks need well under 1 GB of memory."})}}

    @classmethod
    def IS_CHANGED(cls, ckpt_name, **_):
        return host.model_fingerprint("geodream", ckpt_name)

    def load(self, ckpt_name):
        path = host.find_model("geodream", ckpt_name, "GeoDreamLoadPrior", "ckpt_name")
        try:
            return (prior_checkpoint.load_prior(path, host.device()),)
        except prior_checkpoint.CheckpointError as err:
            raise ValueError(f"GeoDream: {err}\nPut One-2-3-45's lod0 {prior_checkpoint.RELEASE_NAME} "
                             "(reconstruction/exp/lod0/checkpoints/) in models/geodream/.") from None


class GeoDreamBuildCostVolume:
    DESCRIPTION = ("Builds GeoDream's 3D prior from posed views: 2D features of every view, their variance and mean "
                   "over the views that see each voxel of a 96^3 grid, a sparse 3D U-Net over the voxels seen twice "
                   "or more, upsampled to the cost volume V. With the geometry decoder f_g it gives an SDF anywhere "
                   "(refine it with VSDRefineNeuS, or look at it with PriorToMesh). Views: the object centred on "
                   "white (as Multi-View Generate gives them; a mask or an alpha channel puts others on white), "
                   "the cameras those views were made with.")
    CATEGORY = categories.PRIOR
    RETURN_TYPES = (T.COST_VOLUME,)
    RETURN_NAMES = ("cost_volume",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "prior": (T.PRIOR_MODEL, {"tooltip": "From GeoDreamLoadPrior."}),
            "views": ("IMAGE", {"tooltip": "N >= 2 views of the object (e.g. MultiViewGenerate's), resized to "
                                           "256x256 internally."}),
            "cameras": (T.CAMERAS, {"tooltip": "One camera per view, in the order of the views."}),
            "resolution": ("INT", {"default": release_frame.RELEASE_VOLUME_RESOLUTION, "min": 16, "max": 512, "step": 1,
                                   "tooltip": "Voxels per axis of the output volume V (150 in GeoDream). Memory is "
                                              "16 * resolution^3 floats: 216 MB at 150; refinement trains all of it."}),
            "grid": ("INT", {"default": release_frame.RELEASE_GRID, "min": 8, "max": 192, "step": 1, "tooltip":
                             "Voxels per axis of the sparse 3D CNN. 96 is what the weights were trained at; other "
                             "values change the voxel size the CNN sees and only suit quick tests. Time ~ grid^3."}),
            "backend": (["auto", *BACKENDS], {"default": "auto", "tooltip":
                        "Sparse convolution engine: spconv when a build for your device is installed (auto), or "
                        "dense PyTorch convolutions; same numbers. At grid 96 on a 2-core CPU: dense ~20 s, spconv's "
                        "CPU build ~40 s (it must run single-threaded), both under 2 GB."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Optional background mask per view (or one for all), ComfyUI's convention "
                              "as LoadImage gives it: 1 = background. Background pixels (alpha <= 128/255) become "
                              "white, the rest stay as they are, as the release mattes its views. Use it for views "
                              "with a transparent background (LoadImage's MASK) or a better background remover's "
                              "mask (through InvertMask if it marks the object with 1). A 4-channel IMAGE's alpha "
                              "is used the same way when no mask is connected."}),
            "norm_statistics": (list(NORM_STATISTICS), {"default": "batch", "tooltip":
                                "Which statistics the prior's batch norms use. batch: those of these views' pixels "
                                "and of each sparse level's active voxels, as the release built its volumes (its "
                                "networks ran in training mode). running: the checkpoint's stored running "
                                "statistics (eval mode), which the release never used to build a volume."}),
        }}

    def build(self, prior, views, cameras, resolution, grid, backend, mask=None, norm_statistics="batch"):
        if views.ndim != 4 or views.shape[-1] < 3:
            raise ValueError(f"GeoDream: views must be an IMAGE batch [N, H, W, 3], got {tuple(views.shape)}.")
        if views.shape[0] < 2:
            raise ValueError("GeoDream: the cost volume needs at least 2 views (a voxel must be seen twice).")
        if views.shape[0] != len(cameras):
            raise ValueError(f"GeoDream: {views.shape[0]} views but {len(cameras)} cameras; give one camera per view.")
        require_finite_views(views, "Build Cost Volume's input 'views'")
        views = views_on_white(views, mask)
        progress = host.Progress(build_steps(grid), "GeoDream cost volume")

        def step():
            host.check_interrupt()
            progress.update()

        try:
            volume = build_cost_volume(prior, views, cameras, resolution, grid,
                                       backend=None if backend == "auto" else backend, check=step,
                                       statistics=norm_statistics)
        finally:
            progress.close()
        check_volume(volume.volume, volume.bbox, "the cost volume built from these views", "Check the prior's "
                     "checkpoint (GeoDream Load Prior) and its norm_statistics, and the views.")
        return (volume,)


class GeoDreamPriorToMesh:
    DESCRIPTION = ("Meshes the prior's surface s(x) = threshold by marching cubes, to see its shape in seconds "
                   "before the long refinement.")
    CATEGORY = categories.PRIOR
    RETURN_TYPES = (T.MESH,)
    RETURN_NAMES = ("mesh",)
    FUNCTION = "mesh"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cost_volume": (T.COST_VOLUME, {"tooltip":
                            "The cost volume from Build Cost Volume (or Load Cost Volume)."}),
            "resolution": ("INT", {"default": 128, "min": 16, "max": 512, "step": 1, "tooltip":
                                   "Grid points per axis where s(x) is evaluated. 128: 2M decoder queries, seconds "
                                   "on a GPU, 1-2 minutes on a small CPU; time grows with resolution^3."}),
            "threshold": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.005, "tooltip":
                                    "The SDF level to mesh; 0 is the surface. Positive values give a fatter shape."}),
        }}

    def mesh(self, cost_volume, resolution, threshold):
        progress = host.Progress(math.ceil(resolution**3 / marching_cubes.CHUNK), "GeoDream prior mesh")

        def step():
            host.check_interrupt()
            progress.update()

        try:
            return (marching_cubes.extract_mesh(cost_volume, resolution, threshold, check=step),)
        finally:
            progress.close()


class GeoDreamSaveCostVolume:
    DESCRIPTION = ("Writes the cost volume (V, its box, the decoder f_g) to one .safetensors file in the output "
                   "folder, so refinement can run later or on another machine.")
    CATEGORY = categories.FILES
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"cost_volume": (T.COST_VOLUME, {"tooltip":
                                             "The cost volume to keep, from Build Cost Volume."}),
                             "filename_prefix": ("STRING", {"default": "GeoDream/cost_volume", "tooltip":
                                                 "Path under the output folder; ~216 MB at resolution 150."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return host.check_prefix(filename_prefix, (".safetensors",))

    def save(self, cost_volume, filename_prefix):
        check_volume(cost_volume.volume, cost_volume.bbox, "Save Cost Volume's input", "Nothing was written.")
        path = host.save_output(filename_prefix, (".safetensors",),
                                lambda finals, temps: cost_volume.save(temps[".safetensors"]),
                                needed=cost_volume.file_bytes())[".safetensors"]
        return {"ui": {"files": [host.output_entry(path)]},
                "result": (str(path),)}


def _volume_file(path: str) -> Path:
    """Load Cost Volume's file: absolute, or relative to the output folder (where Save Cost Volume writes)."""
    file = Path(path).expanduser()
    return file if file.is_absolute() else host.output_dir() / file


class GeoDreamLoadCostVolume:
    DESCRIPTION = ("Reads a cost volume saved by GeoDreamSaveCostVolume (.safetensors), or imports one made by "
                   "GeoDream's research release (con_volume_lod_150.pth, which needs the prior for its decoder; "
                   "converted from the release's Y-down frame to the pack's).")
    CATEGORY = categories.FILES
    RETURN_TYPES = (T.COST_VOLUME,)
    RETURN_NAMES = ("cost_volume",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"path": ("STRING", {"default": "", "tooltip":
                                      "The file: absolute, or relative to the output folder."})},
                "optional": {"prior": (T.PRIOR_MODEL, {"tooltip": "Needed only for a release .pth volume."})}}

    @classmethod
    def IS_CHANGED(cls, path, **_):
        return host.file_fingerprint(_volume_file(path))

    def load(self, path, prior=None):
        file = _volume_file(path)
        if not file.is_file():
            raise FileNotFoundError(f"GeoDream: no cost volume at {file}.")
        if file.suffix.lower() == ".safetensors":
            return (CostVolume.load(file, host.device()),)
        if file.suffix.lower() in (".pth", ".pt"):
            if prior is None:
                raise ValueError("GeoDream: a release .pth cost volume holds no decoder; connect GeoDreamLoadPrior.")
            what, fix = "the release's cost volume (con_volume_lod_150.pth)", "Pick another file, or export it again."
            volume = model_files.read_checkpoint(file, what, fix)
            if not isinstance(volume, torch.Tensor):
                raise GeoDreamError(f"GeoDream: '{file}' is not {what}: it holds a {type(volume).__name__}, not "
                                    f"the one tensor that file holds. {fix}")
            require_shape(volume, (1, LATENT_CHANNELS, None, None, None), f"'{file}'", fix)
            require_finite(volume, f"'{file}'")
            return (cost_volume_from_release(volume, prior),)
        raise ValueError(f"GeoDream: {file.name}: expected a .safetensors (ours) or .pth (the release's) file.")


NODES = {
    "GeoDreamLoadPrior": (GeoDreamLoadPrior, "GeoDream Load Prior (SparseNeuS)"),
    "GeoDreamBuildCostVolume": (GeoDreamBuildCostVolume, "GeoDream Build Cost Volume"),
    "GeoDreamPriorToMesh": (GeoDreamPriorToMesh, "GeoDream Prior To Mesh"),
    "GeoDreamSaveCostVolume": (GeoDreamSaveCostVolume, "GeoDream Save Cost Volume"),
    "GeoDreamLoadCostVolume": (GeoDreamLoadCostVolume, "GeoDream Load Cost Volume"),
}
