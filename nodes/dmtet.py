"""DMTet fine-tuning node: the refined field -> a tetrahedral mesh, shaped on normal maps (SDS), then textured (VSD)
with the geometry frozen, and baked into a UV-textured GEODREAM_MESH."""
import hashlib
import json
from dataclasses import fields

import torch

from ..geodream_ops import run_store
from ..geodream_ops.images import to_pil
from ..geodream_ops.mesh.mesh_finetune import (CHECKPOINT_FORMAT, GEOMETRY_GUIDANCE, TEXTURE_GUIDANCE, FineTuneConfig,
                                           MeshFineTuner, resumable_settings)
from ..geodream_ops.mesh.texture_bake import bake_texture
from ..geodream_ops.mesh.textured_mesh import TexturedMesh
from ..geodream_ops.guidance.reconstruction import ReconstructionTarget
from ..geodream_ops.texture.grid_presets import GRID_PRESETS, TOOLTIP as GRID_TOOLTIP
from . import categories
from . import edge_types as T
from . import host
from . import resume as resuming


def run_family(field, guidance, prompt: str, config: FineTuneConfig, texture_size: int) -> str:
    """Names a run apart from its seed and texture length: everything else that shapes it, the field's content
    included (its SDF and colour at fixed points) and the diffusion models (the checkpoint holds VSD's LoRA), so
    resuming never picks up another input's state (geodream_ops/run_store.py)."""
    probe = torch.rand(256, 3, generator=torch.Generator().manual_seed(0))
    bbox = torch.as_tensor(field.bbox, dtype=torch.float32).cpu()
    with torch.no_grad():
        points = (bbox[0] + (bbox[1] - bbox[0]) * probe).to(host.device())
        values = torch.cat([field.sdf(points).reshape(-1), field.color(points).reshape(-1)]).float().cpu()
    digest = hashlib.sha256(json.dumps([CHECKPOINT_FORMAT, prompt, guidance.name, resumable_settings(config),
                                        texture_size]).encode())
    digest.update(values.numpy().round(5).tobytes())
    return digest.hexdigest()[:16]


class GeoDreamDMTetFineTune:
    DESCRIPTION = ("GeoDream stage 4: turns the refined field into a mesh with marching tetrahedra (DMTet: a grid "
                   "over the surface's box, 10% margin, from the field's SDF at 0), fine-tunes its shape with SDS on rendered normal maps (plus normal-"
                   "consistency and Laplacian smoothing), then freezes the shape and trains a fresh texture with VSD, "
                   "and bakes it into a UV texture. The reference run (6,500 + 30,000 steps at 512/1024 px) takes "
                   "hours on a large GPU. Stops on cancel (writing a checkpoint) and resumes from it, also to more "
                   "texture steps; checkpoints go to output/GeoDream/checkpoints/.")
    CATEGORY = categories.MESH
    RETURN_TYPES = (T.MESH, "IMAGE")
    RETURN_NAMES = ("mesh", "preview")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "field": (T.FIELD, {"tooltip": "The refined field from VSDRefineNeuS (its SDF gives the starting mesh)."}),
            "guidance": (T.GUIDANCE, {"tooltip": "The Stable Diffusion guidance (SDS on normals for the shape, "
                                                 "VSD with its LoRA for the texture), or GeoDream Reconstruction "
                                                 "Guidance (the known object's normal maps and colours)."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "The text the object should match; the same prompt as refinement."}),
            "tet_resolution": ("INT", {"default": 256, "min": 8, "max": 512, "step": 8, "tooltip":
                                       "Cubes per axis of the tetrahedral grid (6 tetrahedra each): 128 or 256 (the "
                                       "reference). 256 keeps ~1 GB of grid parameters and optimiser state."}),
            "geometry_steps": ("INT", {"default": 6500, "min": 0, "max": 100000, "tooltip":
                                       "Shape iterations (reference 6,500). 0 keeps the field's surface as is."}),
            "texture_steps": ("INT", {"default": 30000, "min": 0, "max": 200000, "tooltip":
                                      "Texture iterations (reference 30,000). 0 bakes the field's own colours."}),
            "render_size": ("INT", {"default": 1024, "min": 64, "max": 2048, "step": 64, "tooltip":
                                    "Texture-pass render size (reference 1024, downsampled to 512 for the VAE; "
                                    "VRAM grows with its square). The shape pass renders at min(this, 512)."}),
            "seed": resuming.seed_input("the cameras, the noise and the fresh texture field", 0xFFFFFFFFFFFFFFFF),
            "preview_every": ("INT", {"default": 500, "min": 0, "max": 100000, "tooltip":
                                      "Show a render in the progress bar every this many steps (0: never)."}),
        }, "optional": {
            "resume": ("BOOLEAN", {"default": True, "tooltip": resuming.RESUME_TOOLTIP + " Only the texture "
                                   "pass can be made longer; another geometry_steps is another run."}),
            "geometry_batch": ("INT", {"default": 8, "min": 1, "max": 64, "tooltip":
                                       "Views per shape step (reference 8); each is a 512 px VAE encode with "
                                       "gradients: lower it if you run out of VRAM."}),
            "texture_size": ("INT", {"default": 1024, "min": 64, "max": 8192, "step": 64,
                                     "tooltip": "Side of the baked texture image, in pixels."}),
            "keep_unfinished_runs": resuming.RETENTION_INPUT,
            "texture_grid": (list(GRID_PRESETS), {"default": "release", "tooltip": GRID_TOOLTIP}),
        }}

    @host.needs_autograd
    def run(self, field, guidance, prompt, tet_resolution, geometry_steps, texture_steps, render_size, seed,
            preview_every, resume=True, geometry_batch=8, texture_size=1024,
            keep_unfinished_runs=resuming.KEEP_UNFINISHED_RUNS, texture_grid="release"):
        for name in ("sdf", "color", "bbox"):
            if not hasattr(field, name):
                raise ValueError(f"GeoDream: 'field' has no '{name}'; connect the field output of VSDRefineNeuS.")
        reconstruction = isinstance(guidance, ReconstructionTarget)
        if not prompt.strip() and geometry_steps + texture_steps > 0 and not reconstruction:
            raise ValueError("GeoDream: the prompt is empty; give the text the object should match.")
        from ..geodream_ops.guidance.score_distillation import make_guidance_fn

        config = FineTuneConfig(tet_resolution=tet_resolution, geometry_steps=geometry_steps,
                                texture_steps=texture_steps, render_size=render_size, geometry_batch=geometry_batch,
                                texture_grid=GRID_PRESETS[texture_grid])
        device = host.device()
        folder = host.output_dir() / "GeoDream" / "checkpoints"
        family = "dmtet-" + run_family(field, guidance, prompt, config, texture_size)
        checkpoint, seed, total, note = resuming.plan(folder, family, seed, geometry_steps + texture_steps, resume)
        texture_steps = config.texture_steps = total - geometry_steps
        run_store.prune(folder, keep_unfinished_runs, checkpoint)
        with host.on_device(guidance.modules(), move=guidance.to):
            torch.manual_seed(seed)
            # The reference shapes with SDS on normals and textures with VSD, each with its own schedule.
            # A reconstruction compares normal maps and colours with the known object's instead.
            if reconstruction:
                geometry_fn, texture_fn = guidance.guidance_fn("normals"), guidance.guidance_fn("colors")
            else:
                geometry_fn = (make_guidance_fn(guidance, prompt, seed=seed, **GEOMETRY_GUIDANCE)
                               if geometry_steps else None)
                texture_fn = (make_guidance_fn(guidance, prompt, seed=seed, **TEXTURE_GUIDANCE)
                              if texture_steps else None)
            tuner = MeshFineTuner(field, geometry_fn, texture_fn, config, seed, device, family)
            tuner.resume(checkpoint)

            progress = host.Progress(tuner.total_steps, "GeoDream DMTet", note)
            # A resumed run shows where it stands (and from which checkpoint) before its first new step.
            progress.update(tuner.step, to_pil(tuner.preview()) if note and preview_every else None)

            def report(stage, step, total, preview):
                progress.update(step, None if preview is None else to_pil(preview))
                host.check_interrupt()

            try:
                vertices, faces = tuner.run(report, checkpoint, preview_every)
            finally:
                progress.close()
                run_store.prune(folder, keep_unfinished_runs, checkpoint, tuner.step < tuner.total_steps)
            # A finished run queued again returns the mesh and preview kept with it instead of baking them again.
            kept = run_store.kept_result(checkpoint, tuner.step)
            if kept is None:
                color_fn = tuner.texture if texture_steps else field.color
                mesh = bake_texture(vertices, faces, color_fn, texture_size, rasterizer=tuner.renderer.rasterizer)
                kept = {f.name: getattr(mesh, f.name) for f in fields(mesh) if getattr(mesh, f.name) is not None}
                kept["preview"] = tuner.preview(min(render_size, 512))[None]
                run_store.keep_result(checkpoint, tuner.step, kept)
            preview = kept.pop("preview")
            return TexturedMesh(**kept), preview


NODES = {"GeoDreamDMTetFineTune": (GeoDreamDMTetFineTune, "GeoDream DMTet Fine-Tune")}
