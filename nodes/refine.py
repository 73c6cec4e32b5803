"""Stage 3 nodes: refine the cost-volume prior into a NeuS field with Variational Score Distillation; save it."""
import hashlib
import json

import torch

from ..geodream_ops import run_store
from ..geodream_ops.prior.cost_volume import CostVolume
from ..geodream_ops.images import to_pil
from ..geodream_ops.refine.neus_field import NeuSField
from ..geodream_ops.refine.neus_renderer import preview_settings, render
from ..geodream_ops.refine.refine_neus import (CHECKPOINT_FORMAT, NonFiniteError, Refinement, RefineSettings,
                                        evaluation_cameras, render_size, turntable)
from ..geodream_ops.guidance.score_distillation import make_guidance_fn
from ..geodream_ops.guidance.sd_guidance import Guidance
from . import categories
from . import edge_types as T
from . import host
from . import resume as resuming

PREVIEW_SIZE = 128


def run_family(cost_volume: CostVolume, guidance: Guidance, prompt: str, settings: RefineSettings) -> str:
    """Names a run apart from its seed and length: the same cost volume, prompt, guidance and render size give the
    same family, whose runs resume one another (geodream_ops/run_store.py)."""
    digest = hashlib.sha1()
    digest.update(cost_volume.volume.detach().float().cpu().numpy().tobytes())
    for tensor in cost_volume.decoder.state_dict().values():
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    digest.update(json.dumps([CHECKPOINT_FORMAT, prompt, guidance.name, settings.resolution]).encode())
    return digest.hexdigest()[:16]


class GeoDreamVSDRefineNeuS:
    DESCRIPTION = ("Refines the 3D prior into a textured NeuS field by Variational Score Distillation (GeoDream stage "
                   "1): the cost volume V is optimised (its decoder stays frozen), colour comes from a fresh hash grid, "
                   "and SD 2.1 guides random views while a camera-conditioned LoRA learns alongside. The release "
                   "runs 8,337 iterations (~25 GB VRAM at 512 px). Checkpoints go to output/GeoDream/refine/ every "
                   "checkpoint_every steps: queueing the same inputs again resumes, and a finished run returns at once.")
    CATEGORY = categories.REFINEMENT
    RETURN_TYPES = (T.FIELD, "IMAGE")
    RETURN_NAMES = ("field", "turntable")
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "cost_volume": (T.COST_VOLUME, {"tooltip": "The 3D prior from BuildCostVolume."}),
            "guidance": (T.GUIDANCE, {"tooltip": "Stable Diffusion from GeoDream Load VSD Guidance."}),
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
        }}

    @host.needs_autograd
    def refine(self, cost_volume, guidance, prompt, steps, resolution, seed, preview_every, resume,
               checkpoint_every=500, keep_unfinished_runs=resuming.KEEP_UNFINISHED_RUNS):
        if not isinstance(cost_volume, CostVolume):
            raise TypeError("GeoDream: 'cost_volume' must come from a BuildCostVolume node.")
        if not isinstance(guidance, Guidance):
            raise TypeError("GeoDream: 'guidance' must come from a GeoDream Load VSD Guidance node.")
        if not prompt.strip():
            raise ValueError("GeoDream: the prompt is empty; describe the object (e.g. 'a ceramic teapot').")
        folder = host.output_dir() / "GeoDream" / "refine"
        settings = RefineSettings(resolution=resolution, checkpoint_every=checkpoint_every)
        family = run_family(cost_volume, guidance, prompt, settings)
        path, seed, steps, note = resuming.plan(folder, family, seed, steps, resume)
        settings.steps, settings.seed = steps, seed
        run_store.prune(folder, keep_unfinished_runs, path)
        # The trained volume's value, gradient and two Adam moments, in float32, beside the guidance's networks.
        working = 4 * cost_volume.volume.numel() * 4
        with host.on_device(guidance.modules(), working_bytes=working, move=guidance.to):
            fn = make_guidance_fn(guidance, prompt.strip(), mode="vsd", seed=seed)
            run = Refinement(cost_volume, fn, settings, host.device(), path, family)
            progress = host.Progress(steps, "GeoDream VSD", note)

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
            frames = run_store.kept_preview(path, run.step)
            if frames is None:
                with torch.no_grad():
                    frames = turntable(field, size=min(resolution, 256), settings=settings.render)
                run_store.keep_preview(path, run.step, frames)
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

    def save(self, field, filename_prefix):
        if not isinstance(field, NeuSField):
            raise TypeError("GeoDream: 'field' must come from a GeoDream VSD Refine NeuS node.")
        path = host.next_output_path(filename_prefix, "safetensors")
        field.save(path)
        return {"ui": {"files": [host.output_entry(p) for p in (path, path.with_suffix(".json"))]}}


def _saved_fields() -> list[str]:
    """Fields written by GeoDreamSaveField: .safetensors with their .json beside them, under output/GeoDream/."""
    root = host.output_dir()
    folder = root / "GeoDream"
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(root)) for p in folder.rglob("*.safetensors") if p.with_suffix(".json").exists())


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
            "field_file": (_saved_fields(), {"tooltip": "A .safetensors under output/GeoDream/ with its .json."}),
        }}

    @host.needs_autograd
    def load(self, cost_volume, field_file):
        path = (host.output_dir() / field_file).resolve()
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
