"""Stand-ins for the few ComfyUI core nodes our example workflows use, with the same inputs and outputs, so the
workflows run headlessly without a ComfyUI checkout. Inside ComfyUI the real nodes run instead."""
from __future__ import annotations

import importlib

import numpy as np
import trimesh
from PIL import Image

from .pack import load_pack


def _host():
    return load_pack().nodes.host


def _images():
    # A submodule the pack itself may not have imported yet.
    return importlib.import_module(f"{load_pack().__name__}.geodream_ops.images")


class LoadImage:
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load"
    CATEGORY = "image"

    @classmethod
    def INPUT_TYPES(cls):
        folder = _host().input_dir()
        files = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True})}}

    def load(self, image):
        return _images().load_image_file(_host().input_dir() / image)


class SaveImage:
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "image"
    PREFIX_DEFAULT = "ComfyUI"
    KIND = "output"  # where the files go and how the "ui" result names them

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE", {"tooltip": "The images to save."}),
                             "filename_prefix": ("STRING", {"default": cls.PREFIX_DEFAULT, "tooltip": (
                                 "The prefix for the file to save. This may include formatting information such as "
                                 "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes.")})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        # Stricter than core, which meets a bad prefix only when it saves: headless, that can be hours in.
        return _host().check_prefix(filename_prefix, (".png",))

    def save(self, images, filename_prefix=PREFIX_DEFAULT):
        host, out = _host(), []
        for image in images:
            picture = _images().to_pil(image)
            path = host.save_output(filename_prefix, (".png",),
                                    lambda finals, temps: picture.save(temps[".png"]), kind=self.KIND)[".png"]
            out.append(host.output_entry(path, self.KIND))
        return {"ui": {"images": out}}


class PreviewImage(SaveImage):
    """As core's: the images go to the temp folder (type "temp"), to be seen, not kept as outputs."""
    KIND = "temp"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def save(self, images):
        return super().save(images, "GeoDreamPreview")


# Core's 3D nodes take either a value of their own type or a 3D file (comfy_api MultiType inputs): the editor sees
# the comma-joined type list (in each node's own order), and a widget's kind is named by "widgetType".


class SaveGLB:
    """Core "Save 3D Model": a core MESH (batched vertices [B,N,3], faces [B,M,3]; optional per-vertex uvs,
    vertex_colors and a texture [B,H,W,3]) saved as one GLB per batch item under the output folder."""
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "3d"

    @classmethod
    def INPUT_TYPES(cls):
        mesh_or_file = ",".join(("MESH", "FILE_3D_GLB", "FILE_3D_GLTF", "FILE_3D_OBJ", "FILE_3D_FBX", "FILE_3D_STL",
                                 "FILE_3D_USDZ", "FILE_3D"))
        return {"required": {"mesh": (mesh_or_file, {"tooltip": "Mesh or 3D file to save"}),
                             "filename_prefix": ("STRING", {"default": "3d/ComfyUI", "multiline": False})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix=None):
        return _host().check_prefix(filename_prefix, (".glb",))  # as SaveImage's

    def save(self, mesh, filename_prefix):
        host, out = _host(), []
        for i in range(mesh.vertices.shape[0]):
            data = _glb(mesh, i)
            path = host.save_output(filename_prefix, (".glb",),
                                    lambda finals, temps: temps[".glb"].write_bytes(data))[".glb"]
            out.append(host.output_entry(path))
        return {"ui": {"3d": out}}


def _glb(mesh, i) -> bytes:
    def numpy(name):
        value = getattr(mesh, name, None)
        return None if value is None else value[i].cpu().numpy()

    uvs, colors, texture = numpy("uvs"), numpy("vertex_colors"), numpy("texture")
    if uvs is not None and texture is not None:
        image = Image.fromarray((np.clip(texture, 0, 1) * 255).astype(np.uint8))
        visual = trimesh.visual.TextureVisuals(uv=uvs, image=image)
    else:
        visual = trimesh.visual.ColorVisuals(vertex_colors=colors) if colors is not None else None
    return trimesh.Trimesh(numpy("vertices"), numpy("faces"), visual=visual, process=False).export(file_type="glb")


class Preview3D:
    """Core "Preview 3D & Animation": shows a model file (a path under the output folder) in the editor."""
    RETURN_TYPES = ()
    FUNCTION = "preview"
    OUTPUT_NODE = True
    CATEGORY = "3d"

    @classmethod
    def INPUT_TYPES(cls):
        model_or_file = ",".join(("STRING", "FILE_3D_GLB", "FILE_3D_GLTF", "FILE_3D_FBX", "FILE_3D_OBJ", "FILE_3D_STL",
                                  "FILE_3D_USDZ", "FILE_3D"))
        return {"required": {"model_file": (model_or_file,
                                           {"default": "", "multiline": False, "widgetType": "STRING",
                                            "tooltip": "3D model file or path string"})},
                "optional": {"camera_info": ("LOAD3D_CAMERA", {"advanced": True}),
                             "bg_image": ("IMAGE", {"advanced": True})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def preview(self, model_file, camera_info=None, bg_image=None):
        # Stricter than core, which leaves a missing file to the viewer: headless there is no viewer to notice.
        if not (_host().output_dir() / model_file).is_file():
            raise FileNotFoundError(f"Preview3D: '{model_file}' is not a file under the output folder")
        return {"ui": {"result": [model_file, camera_info, None]}}


class PreviewAny:
    """Core "Preview Any": shows any value on the node as text (numbers as str(), strings as they are)."""
    RETURN_TYPES = ()
    FUNCTION = "main"
    OUTPUT_NODE = True
    CATEGORY = "utils"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"source": ("*", {})}}

    def main(self, source=None):
        return {"ui": {"text": (source if isinstance(source, str) else str(source),)}}


CORE_NODES = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage,
              "SaveGLB": SaveGLB, "Preview3D": Preview3D, "PreviewAny": PreviewAny}
