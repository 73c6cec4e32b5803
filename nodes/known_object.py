"""Nodes that need no model download: a built-in known object's posed views, a start volume made without weights,
and the reconstruction guidance that stands in Stable Diffusion's place in the refinement and DMTet nodes (the
known-object demo template, example_workflows/known_object_demo.json)."""
from ..geodream_ops.cameras import Cameras
from ..geodream_ops.guidance.reconstruction import ReconstructionTarget
from ..geodream_ops.known_objects import OBJECTS, VIEW_RECIPES, KnownObject, make_object, posed_views, view_cameras
from ..geodream_ops.prior import start_volume
from . import categories
from . import edge_types as T

START_SHAPES = ("visual hull", "sphere")


class GeoDreamKnownObjectViews:
    DESCRIPTION = ("A built-in object made in code (block: a box with six coloured sides and a handle on its left; "
                   "plate: a thin plate with a hole; cup: an open cup) and its views, rendered at the cameras of a "
                   "multi-view recipe, on white. The object itself goes to GeoDream Reconstruction Guidance, which "
                   "then supervises every stage with the truth: the demo of the reconstruction machinery without "
                   "any diffusion model.")
    CATEGORY = categories.MULTIVIEW
    RETURN_TYPES = (T.KNOWN_OBJECT, "IMAGE", T.CAMERAS)
    RETURN_NAMES = ("known_object", "views", "cameras")
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "object": (sorted(OBJECTS), {"default": "block", "tooltip": "Which built-in object."}),
            "view_recipe": (list(VIEW_RECIPES), {"default": "zero123plus-v1.2", "tooltip":
                            "Whose cameras the views are rendered at: MVDream's 4, Zero123++'s 6 (v1.2 or v1.1), "
                            "or the release's 14 (MVDream's 4 + 10 Zero123++ v1.1 tiles)."}),
            "size": ("INT", {"default": 256, "min": 32, "max": 1024, "step": 8,
                             "tooltip": "Side of each view in pixels."}),
            "mesh_resolution": ("INT", {"default": 96, "min": 24, "max": 256, "step": 8, "tooltip":
                                "Marching-cubes grid of the object's mesh (its truth); higher is finer and slower "
                                "to render (every stage renders the truth at its cameras)."}),
        }}

    def make(self, object, view_recipe, size, mesh_resolution):
        obj = make_object(object, mesh_resolution)
        cameras = view_cameras(view_recipe)
        return (obj, posed_views(obj, cameras, size), cameras)


class GeoDreamStartVolume:
    DESCRIPTION = ("A cost volume made without any weights, in place of Build Cost Volume's: the visual hull of the "
                   "views (through Build Cost Volume's camera handling, so the cameras must be the views' own) or a "
                   "sphere, read by a plain decoder whose SDF is the volume's first channel. Refinement then "
                   "optimises this volume as it does the prior's.")
    CATEGORY = categories.PRIOR
    RETURN_TYPES = (T.COST_VOLUME,)
    RETURN_NAMES = ("cost_volume",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "views": ("IMAGE", {"tooltip": "The object on white (as Multi-View Generate or Known Object Views give "
                                           "them)."}),
            "cameras": (T.CAMERAS, {"tooltip": "One camera per view, in the order of the views."}),
            "shape": (list(START_SHAPES), {"default": "visual hull", "tooltip":
                      "visual hull: voxels every view sees on the object (concavities filled). sphere: radius 0.45 "
                      "around the origin, the views unused."}),
            "resolution": ("INT", {"default": 48, "min": 8, "max": 256, "step": 1, "tooltip":
                           "Voxels per axis over the prior's box (2.68 units); refinement trains all of them."}),
            "sharpness": ("FLOAT", {"default": start_volume.DEFAULT_INV_S, "min": 1.0, "max": 1000.0, "step": 1.0,
                                    "tooltip": "NeuS's inv_s (frozen during refinement, as the release freezes "
                                               "the prior's): higher renders a crisper surface."}),
        }}

    def build(self, views, cameras, shape, resolution, sharpness):
        if not isinstance(cameras, Cameras):
            raise TypeError("GeoDream: 'cameras' must come from a camera node or Known Object Views.")
        if views.ndim != 4 or views.shape[0] != len(cameras):
            raise ValueError(f"GeoDream: {tuple(views.shape)} views for {len(cameras)} cameras; give an IMAGE batch "
                             "with one camera per view.")
        box = start_volume.release_box()
        if shape == "sphere":
            sdf = start_volume.sphere_sdf(box, resolution, 0.45)
        else:
            sdf = start_volume.hull_sdf(views.float().cpu(), cameras, box, resolution)
        return (start_volume.plain_cost_volume(sdf, box, sharpness),)


class GeoDreamReconstructionGuidance:
    DESCRIPTION = ("Guidance by reconstruction, in Stable Diffusion's place: the refinement and DMTet nodes take it "
                   "on their guidance input and compare their renders with the known object's truth at the same "
                   "cameras (colour and silhouette; normal maps in DMTet's shape pass) instead of asking a "
                   "diffusion model. Shows what the optimisation machinery does; it is not text or image to 3D. "
                   "Swap in GeoDream Load VSD Guidance for the real thing.")
    CATEGORY = categories.REFINEMENT
    RETURN_TYPES = (T.GUIDANCE,)
    RETURN_NAMES = ("guidance",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "known_object": (T.KNOWN_OBJECT, {"tooltip": "From GeoDream Known Object Views."}),
            "mask_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip":
                            "Weight of the silhouette (opacity vs the true mask) against the colour difference "
                            "in refinement."}),
        }}

    def make(self, known_object, mask_weight):
        if not isinstance(known_object, KnownObject):
            raise TypeError("GeoDream: 'known_object' must come from GeoDream Known Object Views.")
        return (ReconstructionTarget(known_object, mask_weight=mask_weight),)


NODES = {
    "GeoDreamKnownObjectViews": (GeoDreamKnownObjectViews, "GeoDream Known Object Views"),
    "GeoDreamStartVolume": (GeoDreamStartVolume, "GeoDream Start Volume (no weights)"),
    "GeoDreamReconstructionGuidance": (GeoDreamReconstructionGuidance, "GeoDream Reconstruction Guidance"),
}
