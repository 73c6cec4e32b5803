"""A known object reconstructed by the pack's own stages and measured on the exported GLB: what bench/known_shape.py
tabulates and tests/test_known_shape.py checks at a tiny size.

Stages, each as the nodes run it with the reconstruction guidance in Stable Diffusion's place:
  start volume (a sphere, or the views' visual hull; plain decoder or the release's f_g with V fitted to it)
  -> Refinement (refine_neus: its camera sampler, schedules, occupancy grid) with ``colors`` guidance
  -> MeshFineTuner (DMTet geometry on ``normals`` guidance, then the texture pass on ``colors``) -> bake_texture
  -> save_mesh (GLB) -> read back with trimesh and with mesh_import.load_mesh.
After each stage (refinement, DMTet geometry, texture + bake) a GLB is written and measured (mesh_metrics) in the
glTF frame against the truth turned into that frame (cameras.to_gltf_frame)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field, replace
from pathlib import Path

import numpy as np
import torch

from .cameras import Cameras, to_gltf_frame
from .guidance.reconstruction import ReconstructionGuidance
from .known_objects import KnownObject, held_out_cameras, make_object, posed_views, render_truth, view_cameras
from . import mesh_metrics
from .mesh.mesh_export import save_mesh
from .mesh.mesh_finetune import FineTuneConfig, MeshFineTuner
from .mesh.mesh_import import load_mesh
from .mesh.texture_bake import bake_texture
from .mesh.textured_mesh import TexturedMesh
from .prior import marching_cubes, start_volume
from .prior.geometry_decoder import GeometryDecoder
from .refine.neus_field import FieldSettings
from .refine.neus_renderer import RenderSettings
from .refine.refine_neus import Refinement, RefineSettings
from .texture.grid_presets import GRID_PRESETS
from .texture.hash_grid import HashGridConfig

DECODERS = ("plain", "release-fg")
STARTS = ("sphere", "hull")
STAGES = ("refinement", "dmtet-geometry", "texture+bake")
STAGE_FILES = {"refinement": "refinement", "dmtet-geometry": "dmtet_geometry", "texture+bake": "textured"}


@dataclass
class Sizes:
    """How large a run is. Defaults: the CI size (tests/test_known_shape.py); bench/known_shape.py sets larger."""
    object_resolution: int = 48  # marching-cubes grid of the truth
    volume_resolution: int = 32  # the start volume V, per axis over the prior's box
    refine_steps: int = 300
    refine_resolution: int = 32
    n_coarse: int = 64
    lr_scale: float = 10.0  # x the release's learning rates: a few hundred steps must move V as far as 20,000 do
    tet_resolution: int = 24
    geometry_steps: int = 30
    texture_steps: int = 200
    render_size: int = 48
    geometry_batch: int = 2
    texture_size: int = 128
    mesh_resolution: int = 64  # marching cubes of the refined field
    eval_size: int = 48  # held-out renders
    eval_points: int = 4000
    hash_grid: dict = dc_field(default_factory=lambda: GRID_PRESETS["small (CPU)"].to_dict())


def mirrored(cameras: Cameras) -> Cameras:
    """The cameras reflected through the XZ plane (y -> -y): a camera read in a mirrored frame."""
    reflect = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))
    return Cameras(reflect @ cameras.c2w, cameras.fovy_deg, cameras.name + "-mirrored")


class MirroredTruth:
    """A guidance whose truth is rendered at mirrored cameras (``mirrored``): the frame mismatch between a stage's
    renderer and its supervision that the measures must catch."""

    def __init__(self, guidance: ReconstructionGuidance):
        self.guidance, self.uses_opacity = guidance, guidance.uses_opacity

    def __call__(self, images, cameras, step, total_steps, **extra):
        return self.guidance(images, mirrored(cameras), step, total_steps, **extra)


def start_cost_volume(obj: KnownObject, start: str, decoder: str, recipe: str, sizes: Sizes, seed: int = 0):
    """The weight-free start: ``start`` 'sphere' (radius 0.45) or 'hull' (of the recipe's views through Build Cost
    Volume's camera handling); ``decoder`` 'plain' or 'release-fg' (random f_g, frozen, V fitted)."""
    box = start_volume.release_box()
    if start == "sphere":
        sdf = start_volume.sphere_sdf(box, sizes.volume_resolution, 0.45)
    else:
        cameras = view_cameras(recipe)
        sdf = start_volume.hull_sdf(posed_views(obj, cameras, 128), cameras, box, sizes.volume_resolution)
    plain = start_volume.plain_cost_volume(sdf, box)
    if decoder == "plain":
        return plain
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fg = GeometryDecoder()
    return start_volume.fit_volume(fg, plain, seed=seed)


def truth_samples(obj: KnownObject, count: int):
    """The truth's surface samples in glTF's frame."""
    points, normals, colours = obj.sample_surface(count, seed=1)
    return to_gltf_frame(points), to_gltf_frame(normals), colours


def measure_glb(path: Path, obj: KnownObject, truth, sizes: Sizes) -> dict:
    """Metrics of the GLB at ``path`` read back with trimesh (in the file's glTF frame) and the held-out PSNR of the
    pack's loader's reading (our frame). Also ``loaders_agree``: both readings have the same surface."""
    import trimesh

    tm = trimesh.load(path, force="mesh", process=False)
    uv = getattr(tm.visual, "uv", None)
    image = getattr(getattr(tm.visual, "material", None), "baseColorTexture", None)
    read = TexturedMesh(torch.from_numpy(np.asarray(tm.vertices)).float(), torch.from_numpy(np.asarray(tm.faces)),
                        None if uv is None else torch.from_numpy(np.asarray(uv)).float(),
                        None if image is None else torch.from_numpy(np.array(image.convert("RGB"))).float() / 255)
    samples = mesh_metrics.sample_textured(read, sizes.eval_points)
    metrics = mesh_metrics.compare(samples, truth, obj.diagonal)
    metrics["frame_check"] = mesh_metrics.frame_check(samples, truth, obj.diagonal)["passed"]
    ours = load_mesh(path)  # the pack's loader, turned into our frame
    ours_in_gltf = replace(ours, vertices=to_gltf_frame(ours.vertices))
    agree = mesh_metrics.compare(mesh_metrics.sample_textured(ours_in_gltf, sizes.eval_points), samples, obj.diagonal)
    metrics["loaders_agree"] = agree["chamfer_l1_pct"] < 0.5 and agree["colour_error"] < 0.02
    cameras = held_out_cameras()
    rendered = mesh_metrics.render_textured(ours, cameras, sizes.eval_size)
    reference = render_truth(obj, cameras, sizes.eval_size)["rgb"]
    metrics["psnr_db"] = mesh_metrics.psnr(rendered, reference)
    metrics["render"] = rendered
    return metrics


def export(mesh: TexturedMesh, path: Path) -> Path:
    """The mesh as Save Mesh writes a GLB (mesh_export.save_mesh: Y up, glTF frame); the file's path."""
    return save_mesh(mesh, path, "glb")[0]


def refine_settings(sizes: Sizes, seed: int) -> RefineSettings:
    settings = RefineSettings(steps=sizes.refine_steps, resolution=sizes.refine_resolution, seed=seed,
                              checkpoint_every=10 ** 9,
                              field=FieldSettings(hash_grid=sizes.hash_grid),
                              render=RenderSettings(n_coarse=sizes.n_coarse))
    settings.lr = {k: v * sizes.lr_scale for k, v in settings.lr.items()}
    return settings


def run(name: str, out_dir: Path, decoder: str = "plain", start: str = "sphere", recipe: str = "mvdream-4view",
        sizes: Sizes = Sizes(), seed: int = 0, device="cpu", wrap=None, log=print) -> dict:
    """Reconstruct the known object ``name`` and measure every stage (module doc). Returns {stage: metrics} plus
    'truth' (held-out renders of the truth) and 'seconds' per stage. ``wrap(guidance) -> guidance`` stands between
    the stages and their guidance (``MirroredTruth``: a deliberate frame mistake)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = make_object(name, sizes.object_resolution)
    truth = truth_samples(obj, sizes.eval_points)
    results, seconds = {}, {}

    def guidance(kind):
        fn = ReconstructionGuidance(obj, kind)
        return wrap(fn) if wrap else fn

    clock = time.perf_counter()
    cost_volume = start_cost_volume(obj, start, decoder, recipe, sizes, seed)
    refinement = Refinement(cost_volume, guidance("colors"), refine_settings(sizes, seed), device)
    field = refinement.run()
    field.eval()
    coarse = marching_cubes.extract_mesh(field.cost_volume, sizes.mesh_resolution)
    with torch.no_grad():
        baked = bake_texture(coarse.vertices, coarse.faces, field.color, sizes.texture_size)
    seconds["refinement"] = time.perf_counter() - clock
    results["refinement"] = measure_glb(export(baked, out_dir / f"{name}_{STAGE_FILES['refinement']}"), obj, truth, sizes)
    log(f"{name} {decoder}/{start}: refinement {summary(results['refinement'])}")

    clock = time.perf_counter()
    config = FineTuneConfig(tet_resolution=sizes.tet_resolution, geometry_steps=sizes.geometry_steps,
                            texture_steps=sizes.texture_steps, render_size=sizes.render_size,
                            geometry_batch=sizes.geometry_batch, checkpoint_every=10 ** 9,
                            texture_grid=HashGridConfig(**sizes.hash_grid))
    for setting in ("geometry_lr", "texture_encoding_lr", "texture_network_lr", "background_lr"):
        setattr(config, setting, getattr(config, setting) * sizes.lr_scale)
    tuner = MeshFineTuner(field, guidance("normals"), guidance("colors"), config, seed, device)
    shaped = {}

    def after(stage, step, total, preview):
        if step == config.geometry_steps:
            shaped["mesh"] = tuner.mesh()

    vertices, faces = tuner.run(after)
    with torch.no_grad():
        geometry_mesh = bake_texture(*shaped["mesh"], field.color, sizes.texture_size)
        final = bake_texture(vertices, faces, tuner.texture, sizes.texture_size)
    seconds["dmtet"] = time.perf_counter() - clock
    results["dmtet-geometry"] = measure_glb(export(geometry_mesh, out_dir / f"{name}_{STAGE_FILES['dmtet-geometry']}"), obj, truth, sizes)
    results["texture+bake"] = measure_glb(export(final, out_dir / f"{name}_{STAGE_FILES['texture+bake']}"), obj, truth, sizes)
    for stage in STAGES[1:]:
        log(f"{name} {decoder}/{start}: {stage} {summary(results[stage])}")
    results["truth"] = render_truth(obj, held_out_cameras(), sizes.eval_size)["rgb"]
    results["seconds"] = seconds
    return results


def measure_files(name: str, out_dir: Path, sizes: Sizes = Sizes()) -> dict | None:
    """The metrics of a finished ``run``'s GLBs in ``out_dir`` measured again (None when a stage's file is missing),
    with 'truth' as ``run`` gives it."""
    paths = {stage: Path(out_dir) / f"{name}_{STAGE_FILES[stage]}.glb" for stage in STAGES}
    if not all(p.is_file() for p in paths.values()):
        return None
    obj = make_object(name, sizes.object_resolution)
    truth = truth_samples(obj, sizes.eval_points)
    results = {stage: measure_glb(path, obj, truth, sizes) for stage, path in paths.items()}
    results["truth"] = render_truth(obj, held_out_cameras(), sizes.eval_size)["rgb"]
    return results


def summary(metrics: dict) -> str:
    return (f"CD {metrics['chamfer_l1_pct']:.2f}% F1 {metrics['fscore_1pct']:.3f} F2 {metrics['fscore_2pct']:.3f} "
            f"NC {metrics['normal_consistency']:.3f} PSNR {metrics['psnr_db']:.1f} frame "
            f"{'ok' if metrics['frame_check'] else 'WRONG'}")
