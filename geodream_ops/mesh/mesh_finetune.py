"""GeoDream's mesh stage: DMTet geometry fine-tuning on normal maps, then texture fine-tuning on the frozen mesh.

Geometry pass (reference: geodream-dmtet-geometry.yaml): the tet grid's SDF and offsets are optimised with Adam
(lr 1e-3, betas 0.9/0.99) from score distillation on rendered world-space normal maps (SDS at CFG 100 in the
reference, 512 px, batch 8) plus 1e4 x normal consistency and 1e4 x uniform-Laplacian smoothness.
Lengths: our world is ``scene_unit`` (1.34 for a release box) times the release's, so the settings that carry a length
are scaled to behave as the release's do in its own units: the SDF's learning rate x unit (Adam moves a value by
about its LR per step, and our SDF values are unit x the release's) and the Laplacian weight / unit (the uniform
Laplacian is a length); the offsets' learning rate is unitless (they go through tanh into a bound in cells), and so
is normal consistency.
Texture pass (geodream-dmtet-texture.yaml): geometry frozen, a fresh hash-grid texture and an environment background
are optimised with AdamW (encoding lr 2.5e-3, network 2.5e-4, background 5e-5) from VSD on colour renders (1024 px in
the reference, resized to 512 for the VAE by plain bilinear, a 2 x 2 box, as its get_latents does).

Guidance is one callable per pass, ``fn(images [B, 3, H, W] in 0..1, cameras, step, total_steps) -> scalar loss``;
``step`` counts iterations within the pass; a guidance with ``state_dict``/``load_state_dict`` (VSD's LoRA) is
checkpointed with the run. A ``callback(stage, step, total, preview)`` is called between iterations (the node
reports progress and raises there to stop); if it raises, the state is checkpointed first, so a run resumes.
A run continues to more texture steps with the texture schedule of the length it started with (run_store.py); its
geometry pass has a fixed length (the texture is trained on the mesh that pass ends with). A finished run's
checkpoint keeps the result only (no optimiser moments)."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import run_store
from ..cameras import CameraSampler, Cameras, scene_unit
from .dmtet import DMTetGeometry, drop_small_components
from .mesh_render import MeshRenderer, vertex_normals
from ..texture.environment_map import EnvironmentMap
from ..texture.hash_grid import HashGridConfig
from ..texture.texture_field import HashGridTexture

log = logging.getLogger("GeoDream")

CHECKPOINT_FORMAT = 4  # bump when the checkpoint's layout changes: older files are then refused, never misread
GUIDANCE_SIZE = 512  # Stable Diffusion's VAE resolution: the geometry pass renders at most this
PREVIEW_CAMERA = dict(elevation_deg=15.0, azimuth_deg=30.0, distance=1.125, fovy_deg=50.0)
# Reference ranges converted to our frame (the release's negative elevations look from above): geometry [-40, 30],
# texture [-60, 10].
GEOMETRY_CAMERAS = CameraSampler(distance_range=(1.0, 1.25), fovy_range=(40.0, 60.0), elevation_range=(-30.0, 40.0))
TEXTURE_CAMERAS = CameraSampler(distance_range=(1.0, 1.25), fovy_range=(40.0, 60.0), elevation_range=(-10.0, 60.0))

# Score-distillation settings of the release's two DMTet configs (baaivision/GeoDream, configs/geodream-dmtet-
# geometry.yaml and geodream-dmtet-texture.yaml), for score_distillation.make_guidance_fn. Their t_max schedules
# [2000, 0.98, 0.5, 2001] and [3000, 0.98, 0.4, 3001] switch at iteration 2001 of 6,500 and 3001 of 30,000 (one
# optimiser per pass, so Lightning's steps are iterations); given as fractions, a shorter run switches at the same
# point of its pass.
GEOMETRY_GUIDANCE = dict(mode="sds", guidance_scale=100.0, min_step_percent=0.02, max_step_percent=0.98,
                         max_step_percent_annealed=0.5, anneal_at_fraction=2001 / 6500)
TEXTURE_GUIDANCE = dict(mode="vsd", guidance_scale=7.5, min_step_percent=0.02, max_step_percent=0.98,
                        max_step_percent_annealed=0.4, anneal_at_fraction=3001 / 30000, lora_lr=2.5e-5)


@dataclass
class FineTuneConfig:
    tet_resolution: int = 256
    geometry_steps: int = 6500  # the release's max_steps (the configs' latest version; the first said 5,000/25,000)
    texture_steps: int = 30000
    render_size: int = 1024  # texture pass; the geometry pass renders at min(render_size, 512)
    geometry_batch: int = 8
    texture_grid: HashGridConfig = HashGridConfig()  # the release's texture grid: 16 x 2, 2^19, base 16, max 4096
    texture_batch: int = 1
    isosurface_threshold: float = 0.0
    lambda_normal_consistency: float = 1e4
    lambda_laplacian: float = 1e4
    geometry_lr: float = 1e-3
    texture_encoding_lr: float = 2.5e-3
    texture_network_lr: float = 2.5e-4
    background_lr: float = 5e-5
    checkpoint_every: int = 500

    @property
    def geometry_size(self) -> int:
        return min(self.render_size, GUIDANCE_SIZE)


def mesh_edges(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """[E, 2] undirected edges (i < j), each once; a 1-D key sort is far cheaper than unique over rows."""
    ends = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).sort(dim=1)[0]
    keys = torch.unique(ends[:, 0] * num_vertices + ends[:, 1])
    return torch.stack([keys // num_vertices, keys % num_vertices], dim=1)


def normal_consistency(normals: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos between the vertex normals at the two ends of every edge (threestudio's definition)."""
    return (1 - F.cosine_similarity(normals[edges[:, 0]], normals[edges[:, 1]], dim=-1)).mean()


def laplacian_smoothness(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean norm of the uniform Laplacian (degree * v_i - sum of neighbours), threestudio's ``laplacian()``."""
    pairs = torch.cat([edges, edges.flip(1)])  # each directed neighbour pair once
    degree = torch.bincount(pairs[:, 0], minlength=vertices.shape[0]).to(vertices.dtype)
    neighbours = torch.zeros_like(vertices).index_add(0, pairs[:, 0], vertices[pairs[:, 1]])
    return (degree[:, None] * vertices - neighbours).norm(dim=1).mean()


def resumable_settings(config: FineTuneConfig) -> dict:
    """The settings a checkpoint must share with a run that continues it: all but the texture pass's length."""
    settings = asdict(config)
    del settings["texture_steps"]
    return settings


class MeshFineTuner:
    def __init__(self, field, geometry_guidance, texture_guidance, config: FineTuneConfig, seed: int, device,
                 family: str = ""):
        """``family`` names the run's inputs apart from seed and length in the checkpoint's .json (run_store)."""
        self.config, self.device, self.seed, self.family = config, torch.device(device), seed, family
        self.texture_schedule_steps = config.texture_steps  # a resumed run keeps the length it started with
        self.geometry_guidance, self.texture_guidance = geometry_guidance, texture_guidance
        self.geometry = DMTetGeometry.from_field(field, config.tet_resolution, config.isosurface_threshold, device)
        box = torch.as_tensor(field.bbox, dtype=torch.float32, device=device)
        # The release's texture grid and camera distances use the field's box (radius 1), not the tet grid's.
        self.texture = HashGridTexture(box, config.texture_grid).to(device)
        self.unit = scene_unit(box)
        self.background = EnvironmentMap().to(device)  # geodream-dmtet-texture.yaml's neural environment map
        self.geometry_optimizer = torch.optim.Adam([
            {"params": [self.geometry.sdf], "lr": config.geometry_lr * self.unit},
            {"params": [self.geometry.deformation], "lr": config.geometry_lr}], betas=(0.9, 0.99), eps=1e-15)
        self.texture_optimizer = torch.optim.AdamW([
            {"params": self.texture.encoding_parameters(), "lr": config.texture_encoding_lr},
            {"params": self.texture.network_parameters(), "lr": config.texture_network_lr},
            {"params": self.background.parameters(), "lr": config.background_lr}], betas=(0.9, 0.99), eps=1e-15)
        self.renderer = MeshRenderer(self.device)
        log.info("GeoDream DMTet: %d-cube tet grid, texture: hash grid %s on %s", config.tet_resolution,
                 config.texture_grid, self.texture.encoding.resolved_backend(self.device))
        self.generator = torch.Generator().manual_seed(seed)
        self.step = 0  # iterations done over both passes
        self.frozen_mesh = None

    @property
    def total_steps(self) -> int:
        return self.config.geometry_steps + self.config.texture_steps

    # --- one iteration of each pass ----------------------------------------------------------------------------
    def geometry_step(self) -> float:
        c = self.config
        vertices, faces = self.geometry.mesh()
        if faces.shape[0] == 0:
            raise RuntimeError("GeoDream: the DMTet surface vanished during geometry fine-tuning (every SDF value "
                               "has one sign); lower the guidance strength or the number of geometry steps.")
        cameras = GEOMETRY_CAMERAS.sample(c.geometry_batch, self.generator, self.unit).to(self.device)
        images = self.renderer.normals(vertices, faces, cameras, c.geometry_size)
        loss = self.geometry_guidance(images, cameras, self.step, c.geometry_steps)
        edges = mesh_edges(faces, vertices.shape[0])
        loss = (loss + c.lambda_normal_consistency * normal_consistency(vertex_normals(vertices, faces), edges)
                + c.lambda_laplacian / self.unit * laplacian_smoothness(vertices, edges))
        self.geometry_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.geometry_optimizer.step()
        return float(loss.detach())

    def texture_step(self) -> float:
        c = self.config
        vertices, faces = self.mesh()
        cameras = TEXTURE_CAMERAS.sample(c.texture_batch, self.generator, self.unit).to(self.device)
        images = self.renderer.colors(vertices, faces, cameras, c.render_size, self.texture, self.background)
        # the render at full size: the guidance resizes it for the VAE with plain bilinear, as the release's
        # get_latents does (1024 -> 512 is then exactly a 2 x 2 box)
        loss = self.texture_guidance(images, cameras, self.step - c.geometry_steps, self.texture_schedule_steps)
        self.texture_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.texture_optimizer.step()
        return float(loss.detach())

    def mesh(self):
        """The current surface without gradients; once the geometry is frozen, computed once and without floaters
        (as the reference's texture stage removes them)."""
        if self.step < self.config.geometry_steps:
            with torch.no_grad():
                return self.geometry.mesh()
        if self.frozen_mesh is None:
            with torch.no_grad():
                self.frozen_mesh = drop_small_components(*self.geometry.mesh())
        return self.frozen_mesh

    @torch.no_grad()
    def preview(self, size: int = 256) -> torch.Tensor:
        """[H, W, 3] in 0..1 from a fixed three-quarter view: normals while shaping, colours while texturing."""
        camera = Cameras.from_spherical(**{**PREVIEW_CAMERA, "distance": PREVIEW_CAMERA["distance"] * self.unit})
        camera = camera.to(self.device)
        vertices, faces = self.mesh()
        if self.step <= self.config.geometry_steps or self.config.texture_steps == 0:
            image = self.renderer.normals(vertices, faces, camera, size)
        else:
            image = self.renderer.colors(vertices, faces, camera, size, self.texture, self.background)
        return image[0].permute(1, 2, 0).clamp(0, 1).cpu()

    # --- the run -----------------------------------------------------------------------------------------------
    def run(self, callback=None, checkpoint: Path | None = None, preview_every: int = 0):
        while self.step < self.total_steps:
            stage = "geometry" if self.step < self.config.geometry_steps else "texture"
            loss = self.geometry_step() if stage == "geometry" else self.texture_step()
            self.step += 1
            if self.step % 100 == 0 or self.step == self.total_steps:
                log.info("GeoDream DMTet %s step %d/%d loss %.4g", stage, self.step, self.total_steps, loss)
            show = preview_every > 0 and (self.step % preview_every == 0 or self.step == self.total_steps)
            if checkpoint is not None and (self.step % self.config.checkpoint_every == 0
                                           or self.step == self.total_steps):
                self.save(checkpoint)
            if callback is not None:
                try:
                    callback(stage, self.step, self.total_steps, self.preview() if show else None)
                except BaseException:
                    if checkpoint is not None and self.step % self.config.checkpoint_every:
                        self.save(checkpoint)
                    raise
        return self.mesh()

    # --- checkpoints -------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything to continue exactly; once the run is finished, the result only: the optimiser moments (two
        thirds of the file) are dropped, and continuing to more texture steps starts them afresh."""
        finished = self.step >= self.total_steps
        state = {"format": CHECKPOINT_FORMAT, "config": asdict(self.config), "step": self.step,
                 "texture_schedule_steps": self.texture_schedule_steps, "generator": self.generator.get_state(),
                 "geometry": self.geometry.state_dict(), "texture": self.texture.state_dict(),
                 "background": self.background.state_dict(),
                 "guidance": {name: fn.state_dict() for name, fn in self._stateful_guidance().items()}}
        if finished:
            for guidance_state in state["guidance"].values():
                guidance_state.pop("optimizer", None)
        else:
            state["geometry_optimizer"] = self.geometry_optimizer.state_dict()
            state["texture_optimizer"] = self.texture_optimizer.state_dict()
        return state

    def _stateful_guidance(self) -> dict:
        return {name: fn for name, fn in (("geometry", self.geometry_guidance), ("texture", self.texture_guidance))
                if hasattr(fn, "state_dict")}

    def load_state_dict(self, state: dict) -> None:
        saved = dict(state["config"])
        saved.pop("texture_steps")
        if saved != resumable_settings(self.config):
            raise ValueError("GeoDream: the checkpoint was made with other DMTet settings; resume with the same "
                             "settings or turn resume off to start over.")
        # A run that had no texture pass takes the length it is continued to.
        self.step = state["step"]
        self.texture_schedule_steps = state["texture_schedule_steps"] or self.config.texture_steps
        self.generator.set_state(state["generator"])
        self.geometry.load_state_dict(state["geometry"])
        self.texture.load_state_dict(state["texture"])
        self.background.load_state_dict(state["background"])
        if "geometry_optimizer" in state:
            self.geometry_optimizer.load_state_dict(state["geometry_optimizer"])
            self.texture_optimizer.load_state_dict(state["texture_optimizer"])
        for name, fn in self._stateful_guidance().items():
            if name in state["guidance"]:
                fn.load_state_dict(state["guidance"][name])
        self.frozen_mesh = None

    def save(self, path: Path) -> None:
        run_store.write(path, self.state_dict(), run_store.RunInfo(
            self.family, self.seed, self.step, self.total_steps, self.texture_schedule_steps))

    def resume(self, path: Path) -> bool:
        """Load ``path`` if it exists; True if it did."""
        path = Path(path)
        if not path.is_file():
            return False
        state = run_store.load(path, self.device, CHECKPOINT_FORMAT)
        with run_store.restoring(path):
            self.load_state_dict(state)
        log.info("GeoDream DMTet: resumed from %s at step %d", path, self.step)
        return True
