"""Stage 3 nodes: refine the cost-volume prior into a NeuS field with Variational Score Distillation; save it."""
import hashlib
import json

import torch

from ..geodream_ops import run_store
from ..geodream_ops.prior.cost_volume import CostVolume, check_volume
from ..geodream_ops.tensor_checks import require_finite
from ..geodream_ops.images import to_pil
from ..geodream_ops.refine.neus_field import FieldSettings, NeuSField
from ..geodream_ops.refine.neus_renderer import RenderSettings, preview_settings, render
from ..geodream_ops.texture.grid_presets import GRID_PRESETS, TOOLTIP as GRID_TOOLTIP
from ..geodream_ops.refine.refine_neus import (CHECKPOINT_FORMAT, NonFiniteError, Refinement, RefineSettings,
                                        evaluation_cameras, render_size, turntable)
from ..geodream_ops.guidance.reconstruction import ReconstructionTarget
from ..geodream_ops.guidance.score_distillation import make_guidance_fn
from ..geodream_ops.guidance.sd_guidance import Guidance
from . import categories
from . import edge_types as T
from . import host
from . import resume as resuming

PREVIEW_SIZE = 128
FIELD_SUFFIXES = (".safetensors", ".json")  # the tensors, then the settings (published first)


def run_family(cost_volume: CostVolume, guidance: Guidance, prompt: str, settings: RefineSettings) -> str:
    """Names a run apart from its seed and length: the same cost volume, prompt, guidance and render size give the
    same family, whose runs resume one another (geodream_ops/run_store.py)."""
    digest = hashlib.sha1()
    digest.update(cost_volume.volume.detach().float().cpu().numpy().tobytes())
    # The decoder's weights, and what the state dict leaves out: its frame box, the volume's box and sharpness.
    for tensor in (*cost_volume.decoder.state_dict().values(), getattr(cost_volume.decoder, "frame", torch.zeros(0)),
                   cost_volume.bbox):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps([CHECKPOINT_FORMAT, cost_volume.inv_s, prompt, guidance.name, settings.resolution, settings.render.n_coarse,
                              settings.field.hash_grid, settings.lr]).encode())
    return digest.hexdigest()[:16]


class GeoDreamVSDRefineNeuS:
    DESCRIPTION = ("Refines the 3D prior into a textured NeuS field by Variational Score Distillation (GeoDream stage "
                   "1): the cost volume V is optimised (its decoder stays frozen), colour comes from a fresh hash grid, "
                   "and SD 2.1 guides random views while a camera-conditioned LoRA learns alongside. The release "
                   "runs 20,000 iterations (~25 GB VRAM at 512 px). Checkpoints go to output/GeoDream/refine/ every "
                   "checkpoint_every steps: queueing the same inputs again resumes, and a finished run returns at once.")
    CATEGORY = categories.REFINEMENT
    RETURN_TYPES = (T.FIELD, "IMAGE")
    RETURN_NAMES = ("field", "turntable")
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cost_volume": (T.COST_VOLUME, {"tooltip": "The 3D prior from BuildCostVolume."}),
            "guidance": (T.GUIDANCE, {"tooltip": "Stable Diffusion from GeoDream Load VSD Guidance (or a known "
                                                 "object's truth from GeoDream Reconstruction Guidance)."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                       "What the object is. ', front view' / ', side view' / ', back view' is appended per camera."}),
            "steps": ("INT", {"default": RefineSettings.steps, "min": 1, "max": 100000, "tooltip":
                      "Iterations. 20000 is the release's run (its max_steps 60,000 counts three optimisers per "
                      "iteration): about 1-2 s each on a recent GPU at 512 px, so 6-11 hours and ~25 GB of VRAM. "
                      "Schedules scale with it: 5000 at resolution 256 is a ~1-2 hour look in roughly half the VRAM."}),
            "resolution": ("INT", {"default": 512, "min": 32, "max": 1024, "step": 16, "tooltip":
                           "Render size after the first 5% of the run (which renders at half). 512 as released; "
                           "256 needs roughly half the VRAM and time."}),
            "seed": resuming.seed_input("the cameras, noise, timesteps and the fresh networks", 2 ** 31 - 1),
            "preview_every": ("INT", {"default": 250, "min": 0, "max": 100000, "tooltip":
                              "Send a preview render to the editor every this many steps (0: never). A preview is "
                              f"for looking: one view at {PREVIEW_SIZE} px (or the step's render size if smaller) "
                              "with a quarter of the run's samples per ray and no autograd, a small fraction of a "
                              "training step's time and memory."}),
            "resume": ("BOOLEAN", {"default": True, "tooltip": resuming.RESUME_TOOLTIP}),
        }, "optional": {
            "checkpoint_every": ("INT", {"default": 500, "min": 1, "max": 100000, "tooltip":
                                 "Write a checkpoint every this many steps (~0.8 GB each at the release's size: "
                                 "the 150^3 volume, the hash grid and their optimiser moments)."}),
            "keep_unfinished_runs": resuming.RETENTION_INPUT,
            "samples_per_ray": ("INT", {"default": RenderSettings.n_coarse, "min": 16, "max": 2048, "tooltip":
                                "Samples along each ray through the box (512: the release's step). Fewer is faster "
                                "and misses thin parts."}),
            "texture_grid": (list(GRID_PRESETS), {"default": "release", "tooltip": GRID_TOOLTIP}),
            "learning_rate_scale": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 100.0, "step": 0.1, "tooltip":
                                    "x the release's learning rates (1). A run of a few hundred steps at the "
                                    "release's rates barely moves V (its rate falls to 1e-4 after the warm-up); "
                                    "the known-object demo uses 10."}),
        }}

    @host.needs_autograd
    def refine(self, cost_volume, guidance, prompt, steps, resolution, seed, preview_every, resume,
               checkpoint_every=500, keep_unfinished_runs=resuming.KEEP_UNFINISHED_RUNS,
               samples_per_ray=RenderSettings.n_coarse, texture_grid="release", learning_rate_scale=1.0):
        if not isinstance(cost_volume, CostVolume):
            raise TypeError("GeoDream: 'cost_volume' must come from Build Cost Volume, Load Cost Volume or Start Volume.")
        reconstruction = isinstance(guidance, ReconstructionTarget)
        if not (reconstruction or isinstance(guidance, Guidance)):
            raise TypeError("GeoDream: 'guidance' must come from GeoDream Load VSD Guidance (or GeoDream "
                            "Reconstruction Guidance).")
        if not (prompt.strip() or reconstruction):
            raise ValueError("GeoDream: the prompt is empty; describe the object (e.g. 'a ceramic teapot').")
        check_volume(cost_volume.volume, cost_volume.bbox, "VSD Refine NeuS's input 'cost_volume'",
                     "Build or load the cost volume again.")
        folder = host.output_dir() / "GeoDream" / "refine"
        settings = RefineSettings(resolution=resolution, checkpoint_every=checkpoint_every,
                                  render=RenderSettings(n_coarse=samples_per_ray),
                                  field=FieldSettings(hash_grid=GRID_PRESETS[texture_grid].to_dict()))
        settings.lr = {group: lr * learning_rate_scale for group, lr in settings.lr.items()}
        family = run_family(cost_volume, guidance, prompt, settings)
        path, seed, steps, note = resuming.plan(folder, family, seed, steps, resume)
        settings.steps, settings.seed = steps, seed
        run_store.prune(folder, keep_unfinished_runs, path)
        # The trained volume's value, gradient and two Adam moments, in float32, beside the guidance's networks.
        working = 4 * cost_volume.volume.numel() * 4
        with host.on_device(guidance.modules(), working_bytes=working, move=guidance.to):
            fn = guidance.guidance_fn("colors") if reconstruction else make_guidance_fn(guidance, prompt.strip(),
                                                                                         mode="vsd", seed=seed)
            run = Refinement(cost_volume, fn, settings, host.device(), path, family)
            progress = host.Progress(steps, "GeoDream reconstruction" if reconstruction else "GeoDream VSD", note)

            def preview(step):
                camera = evaluation_cameras(run.field, (step * 7.5) % 360)
                size = min(PREVIEW_SIZE, render_size(step, settings))
                with torch.no_grad():
                    image = render(run.field, camera, size, size, preview_settings(settings.render))["rgb"][0]
                return to_pil(image)

            finished = run.step >= steps
            # A resumed run shows where it stands (and from which checkpoint) before its first new step.
            progress.update(run.step, preview(run.step) if note and preview_every and not finished else None)

            def on_step(step, refinement):
                progress.update(step, preview(step) if preview_every and step % preview_every == 0 else None)
                host.check_interrupt()

            try:
                field = run.run(on_step)
            except NonFiniteError as error:
                raise RuntimeError(str(error)) from None
            finally:
                progress.close()
                run_store.prune(folder, keep_unfinished_runs, path, current_unfinished=run.step < steps)
            field.eval()
            # A finished run queued again returns the turntable kept with it instead of rendering it again.
            kept = run_store.kept_result(path, run.step)
            if kept is None:
                with torch.no_grad():
                    frames = turntable(field, size=min(resolution, 256), settings=settings.render)
                run_store.keep_result(path, run.step, {"images": frames})
            else:
                frames = kept["images"]
        return (field, frames)


class GeoDreamSaveField:
    DESCRIPTION = ("Writes a refined field as .safetensors (every tensor, the frozen decoder included) beside a small "
                   ".json of its settings, under the output folder.")
    CATEGORY = categories.FILES
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"field": (T.FIELD, {"tooltip": "From GeoDream VSD Refine NeuS."}),
                             "filename_prefix": ("STRING", {"default": "GeoDream/field",
                                                            "tooltip": "Path under the output folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return host.check_prefix(filename_prefix, FIELD_SUFFIXES)

    def save(self, field, filename_prefix):
        if not isinstance(field, NeuSField):
            raise TypeError("GeoDream: 'field' must come from a GeoDream VSD Refine NeuS node.")
        for name, tensor in field.state_dict().items():
            if not name.startswith("occupancy."):  # an unmeasured occupancy bound is +inf by design
                require_finite(tensor, f"Save Field's input field ('{name}'); nothing was written")
        finals = host.save_output(filename_prefix, FIELD_SUFFIXES,
                                  lambda finals, temps: field.save(temps[".safetensors"], temps[".json"]),
                                  needed=field.file_bytes())
        return {"ui": {"files": [host.output_entry(p) for p in finals.values()]}}


def _saved_fields() -> list[str]:
    """Fields written by GeoDreamSaveField, wherever its prefix put them: .safetensors with their .json beside
    them, anywhere under the output folder (named relative to it)."""
    root = host.output_dir()
    return [name[: -len(host.OUTPUT_TAG)] for name in host.listed_files((".safetensors",), ("output",))
            if (root / name[: -len(host.OUTPUT_TAG)]).with_suffix(".json").is_file()]


def _field_path(field_file: str):
    return (host.output_dir() / field_file).resolve()


class GeoDreamLoadField:
    DESCRIPTION = ("Loads a field saved by GeoDream Save Field, e.g. to run the mesh stage again without refining. "
                   "The cost volume supplies only the decoder's structure; every weight comes from the file.")
    CATEGORY = categories.FILES
    RETURN_TYPES = (T.FIELD,)
    RETURN_NAMES = ("field",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cost_volume": (T.COST_VOLUME, {"tooltip": "The prior the field was refined from (its decoder type)."}),
            "field_file": (_saved_fields(), {"tooltip": "A .safetensors under the output folder with its .json, "
                                                        "as GeoDream Save Field writes it."}),
        }}

    @classmethod
    def IS_CHANGED(cls, field_file, **_):
        path = _field_path(field_file)
        return host.file_fingerprint(path, path.with_suffix(".json"))

    @host.needs_autograd
    def load(self, cost_volume, field_file):
        path = _field_path(field_file)
        if host.output_dir().resolve() not in path.parents or not path.with_suffix(".json").exists():
            raise FileNotFoundError(f"GeoDream: '{field_file}' is not a saved field (a .safetensors with its .json) "
                                    "under the output folder; save one with GeoDream Save Field.")
        # A damaged file, or one that does not fit this cost volume's decoder, is a GeoDreamError naming it.
        return (NeuSField.load(path, cost_volume).to(host.device()),)


NODES = {
    "GeoDreamVSDRefineNeuS": (GeoDreamVSDRefineNeuS, "GeoDream VSD Refine NeuS"),
    "GeoDreamSaveField": (GeoDreamSaveField, "GeoDream Save Field"),
    "GeoDreamLoadField": (GeoDreamLoadField, "GeoDream Load Field"),
}
