"""Camera nodes: a published rig, or cameras typed in, for users who bring their own views."""
import json
import math

from ..geodream_ops import cameras
from . import categories
from . import edge_types as T
from . import host


class GeoDreamCameraRig:
    DESCRIPTION = ("The cameras of a published multi-view model (Zero123++ v1.1/v1.2: 6 views; MVDream: 4 views), "
                   "in the pack's world frame (Z up, front facing +X). Use it to feed your own views to "
                   "BuildCostVolume.")
    CATEGORY = categories.FILES
    RETURN_TYPES = (T.CAMERAS,)
    RETURN_NAMES = ("cameras",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "rig": (sorted(cameras.RIGS), {"default": "zero123plus-v1.2",
                                           "tooltip": "Which model's camera layout the views follow."}),
            "elevation": ("FLOAT", {"default": cameras.MVDREAM_ELEVATION, "min": -90.0, "max": 90.0, "step": 0.5,
                                    "tooltip":
                                    "Degrees. MVDream: the elevation of all four views (15 as in GeoDream's release). "
                                    "Zero123++ rigs have fixed absolute elevations and ignore it."}),
        }}

    def build(self, rig, elevation):
        return (cameras.RIGS[rig](elevation),)


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = None
    if values is None or not all(math.isfinite(v) for v in values):
        raise ValueError(f"GeoDream: {what} must be numbers separated by commas, got {text!r}")
    return values


class GeoDreamCustomCameras:
    DESCRIPTION = ("Cameras typed in as lists of elevations and azimuths (degrees), one per view, all looking at "
                   "the origin.")
    CATEGORY = categories.FILES
    RETURN_TYPES = (T.CAMERAS,)
    RETURN_NAMES = ("cameras",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "elevations": ("STRING", {"default": "15, 15, 15, 15", "tooltip": "One elevation per view, degrees; "
                                      "positive looks down from above. A single value applies to every view."}),
            "azimuths": ("STRING", {"default": "0, 90, 180, 270", "tooltip": "One azimuth per view, degrees; "
                                    "0 looks at the object's front, 90 at its left side."}),
            "distance": ("FLOAT", {"default": cameras.RELEASE_DISTANCE, "min": 0.1, "max": 100.0, "step": 0.01,
                                   "tooltip": "Camera distance from the origin, in the unit of the [-1, 1] volume."}),
            "fovy": ("FLOAT", {"default": round(cameras.RELEASE_FOVY_DEG, 2), "min": 1.0, "max": 170.0, "step": 0.1,
                               "tooltip": "Vertical field of view in degrees."}),
        }}

    def build(self, elevations, azimuths, distance, fovy):
        el, az = _floats(elevations, "elevations"), _floats(azimuths, "azimuths")
        if len(el) == 1:
            el = el * len(az)
        if not az or len(el) != len(az):
            raise ValueError(f"GeoDream: {len(el)} elevations for {len(az)} azimuths; give one of each per view.")
        return (cameras.Cameras.from_spherical(el, az, distance, fovy),)


class GeoDreamSaveCameras:
    DESCRIPTION = ("Writes the cameras as JSON (camera-to-world matrices in the pack's frame, field of view, and "
                   "elevation/azimuth/distance), e.g. to render your own views in Blender at the same poses.")
    CATEGORY = categories.FILES
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"cameras": (T.CAMERAS, {"tooltip": "Cameras from a rig, a Multi-View Generate node "
                                                                 "or Custom Cameras."}),
                             "filename_prefix": ("STRING", {"default": "GeoDream/cameras",
                                                            "tooltip": "Path under the output folder."})}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return host.check_prefix(filename_prefix, (".json",))

    def save(self, cameras, filename_prefix):
        record = {**cameras.to_dict(),
                  "convention": "Z up, front faces +X; c2w is OpenGL style (camera looks along -Z)",
                  "elevation_deg": cameras.elevation_deg.tolist(), "azimuth_deg": cameras.azimuth_deg.tolist(),
                  "distance": cameras.distance.tolist()}
        text = json.dumps(record, indent=2)
        path = host.save_output(filename_prefix, (".json",),
                                lambda finals, temps: temps[".json"].write_text(text, encoding="utf-8"))[".json"]
        return {"ui": {"files": [host.output_entry(path)]}}


NODES = {
    "GeoDreamSaveCameras": (GeoDreamSaveCameras, "GeoDream Save Cameras"),
    "GeoDreamCameraRig": (GeoDreamCameraRig, "GeoDream Camera Rig"),
    "GeoDreamCustomCameras": (GeoDreamCustomCameras, "GeoDream Custom Cameras"),
}
