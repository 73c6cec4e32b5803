"""Stand-ins for the few ComfyUI core nodes our example workflows use, with the same inputs and outputs, so the
workflows run headlessly without a ComfyUI checkout. Inside ComfyUI the real nodes run instead."""
from __future__ import annotations

import torch
from PIL import Image

from .pack import load_pack


def _host():
    return load_pack().nodes.host


def _images():
    return load_pack().geodream_ops.images


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
        rgb, alpha = _images().from_pil(Image.open(_host().input_dir() / image))
        # ComfyUI's mask is 1 - alpha: 1 where the background is.
        mask = 1.0 - alpha if alpha is not None else torch.zeros(rgb.shape[:2])
        return rgb[None], mask[None]


class SaveImage:
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True
    CATEGORY = "image"
    PREFIX_DEFAULT = "ComfyUI"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": cls.PREFIX_DEFAULT})}}

    def save(self, images, filename_prefix=PREFIX_DEFAULT):
        host, out = _host(), []
        for image in images:
            path = host.next_output_path(filename_prefix, "png")
            _images().to_pil(image).save(path)
            out.append({"filename": path.name, "subfolder": str(path.parent.relative_to(host.output_dir())),
                        "type": "output"})
        return {"ui": {"images": out}}


class PreviewImage(SaveImage):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    def save(self, images):
        return super().save(images, "preview/GeoDreamPreview")


CORE_NODES = {"LoadImage": LoadImage, "SaveImage": SaveImage, "PreviewImage": PreviewImage}
