"""Reconstruction guidance: the stand-in for score distillation when the answer is known. Same interface as
score_distillation.ScoreDistillation -- ``fn(images [B, 3, H, W] in 0..1, cameras, step, total_steps) -> scalar
loss`` -- so the refinement loop, its camera sampler, schedules and occupancy grid, DMTet's geometry and texture
passes, the bake and Save Mesh run exactly as with Stable Diffusion; only the loss is another.

The loss is the difference from the ground truth rendered at the same cameras (known_objects.render_truth):
- ``colors`` (refinement, texture pass): the squared colour difference inside the object's true silhouette (the
  background a stage composites over -- random, learned -- is not the truth's business); where the stage also gives
  its opacity [B, H, W] (``uses_opacity``: the refinement passes ``opacity=``), plus the squared difference of opacity
  and the true mask, which carves what lies outside the silhouette.
- ``normals`` (DMTet geometry pass): the squared difference from the truth's normal map as the geometry pass draws
  normals (release-frame colours over black, mesh_render.MeshRenderer.normals), over the whole image.
Sums over pixels and channels, divided by the batch, as the score-distillation surrogate sums over latents: the
stage's regularisers weigh against it as they do against SDS/VSD at the same render size."""
from __future__ import annotations

import torch

from ..cameras import Cameras
from ..known_objects import KnownObject, normal_image, render_truth
from ..mesh.mesh_render import MeshRenderer

KINDS = ("colors", "normals")


class ReconstructionGuidance:
    """``fn(images, cameras, step, total_steps, opacity=None) -> loss`` against ``target`` (module doc). ``weight``
    scales the whole loss, ``mask_weight`` the opacity term. Stateless (nothing to checkpoint)."""

    def __init__(self, target: KnownObject, kind: str = "colors", weight: float = 1.0, mask_weight: float = 1.0):
        if kind not in KINDS:
            raise ValueError(f"GeoDream: reconstruction guidance kind must be one of {KINDS}, got {kind!r}")
        self.target, self.kind, self.weight, self.mask_weight = target, kind, weight, mask_weight
        self.uses_opacity = kind == "colors"
        self.renderer = MeshRenderer(target.vertices.device)

    def truth(self, cameras: Cameras, size: int) -> dict:
        """The ground truth at ``cameras``: ``image`` [B, 3, H, W] (colours on white or the normal map) and ``mask``
        [B, H, W]."""
        cameras = cameras.to(self.target.vertices.device)
        truth = render_truth(self.target, cameras, size, rasterizer=self.renderer.rasterizer)
        image = normal_image(self.target, cameras, size, self.renderer) if self.kind == "normals" else \
            truth["rgb"].permute(0, 3, 1, 2)
        return {"image": image, "mask": truth["mask"]}

    def __call__(self, images: torch.Tensor, cameras: Cameras, step: int, total_steps: int,
                 opacity: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = images.shape
        if height != width:
            raise ValueError(f"GeoDream: reconstruction guidance renders square truths; got {height}x{width} images")
        truth = self.truth(cameras, height)
        goal, mask = truth["image"].to(images), truth["mask"].to(images)
        error = (images - goal) ** 2
        if self.kind == "colors":
            error = error * mask[:, None]
        loss = error.sum()
        if opacity is not None:
            loss = loss + self.mask_weight * ((opacity.reshape(mask.shape) - mask) ** 2).sum()
        return self.weight * loss / batch


class ReconstructionTarget:
    """What the GEODREAM_GUIDANCE edge carries for a reconstruction (in Stable Diffusion's Guidance place): the
    known object; each stage asks it for the guidance of its pass (``guidance_fn``). ``name`` names the run family."""

    def __init__(self, target: KnownObject, weight: float = 1.0, mask_weight: float = 1.0):
        self.target, self.weight, self.mask_weight = target, weight, mask_weight
        self.name = f"reconstruction:{target.name}:{weight:g}:{mask_weight:g}"

    def modules(self) -> list:
        """No networks to place on a device (the stages' host.on_device contract): the truth is rendered where the
        stage's images are."""
        return []

    def to(self, device) -> "ReconstructionTarget":
        """Itself: nothing to move (see ``modules``)."""
        return self

    def guidance_fn(self, kind: str) -> ReconstructionGuidance:
        """The guidance of a pass: 'colors' (refinement, texture) or 'normals' (DMTet geometry)."""
        return ReconstructionGuidance(self.target, kind, self.weight, self.mask_weight)
