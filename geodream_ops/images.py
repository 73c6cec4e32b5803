"""Conversions between ComfyUI's IMAGE layout ([B, H, W, 3] floats in 0..1) and PIL / torch image layouts, image files
read as ComfyUI's core LoadImage reads them, and the sRGB transfer functions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, ImageSequence, UnidentifiedImageError

from .errors import GeoDreamError


def to_pil(image: torch.Tensor) -> Image.Image:
    """One [H, W, C] image in 0..1 to an 8-bit PIL image."""
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def from_pil(image: Image.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One PIL frame -> ([H, W, 3] in 0..1, alpha [H, W] in 0..1 or None), converted as ComfyUI's core LoadImage
    converts a frame (nodes.py): 32-bit integer 'I' images divided by 255 first, every mode through Pillow's RGB
    conversion (so 16-bit 'I;16' saturates at 255, as in ComfyUI), alpha from an 'A' band or a palette's
    transparency."""
    if image.mode == "I":
        image = image.point(lambda value: value * (1 / 255))
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    if "A" in image.getbands():
        alpha = image.getchannel("A")
    elif image.mode == "P" and "transparency" in image.info:
        alpha = image.convert("RGBA").getchannel("A")
    else:
        return rgb, None
    return rgb, torch.from_numpy(np.asarray(alpha, dtype=np.float32) / 255.0)


def _pillow(fn, arg):
    """``fn(arg)``, retried with truncated images allowed, as ComfyUI's node_helpers.pillow does."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


NO_ALPHA_MASK = 64  # ComfyUI's LoadImage returns an all-zero 64x64 MASK for a frame without alpha


def load_image_file(path) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file as ComfyUI's core LoadImage gives it: (IMAGE [B, H, W, 3], MASK [B, h, w] = 1 - alpha).

    EXIF orientation applied per frame; frames of another size than the first skipped; all frames batched except
    for MPO (a phone's stereo JPEG gives its first frame); a frame without alpha gets a zero 64x64 mask.
    GeoDreamError naming the file when Pillow cannot read it."""
    path = Path(path)
    images, masks = [], []
    try:
        file = _pillow(Image.open, path)
        for frame in ImageSequence.Iterator(file):
            frame = _pillow(ImageOps.exif_transpose, frame)
            rgb, alpha = from_pil(frame)
            if images and rgb.shape != images[0].shape:
                continue
            images.append(rgb)
            masks.append(torch.zeros(NO_ALPHA_MASK, NO_ALPHA_MASK) if alpha is None else 1.0 - alpha)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:  # Pillow's ways of failing on a file
        raise GeoDreamError(f"GeoDream: could not read the image '{path}' ({type(err).__name__}: {err}); it is damaged "
                            "or not an image: save it again as PNG or JPEG.") from err
    if not images:
        raise GeoDreamError(f"GeoDream: the image '{path}' holds no frame.")
    if len(images) == 1 or file.format == "MPO":
        return images[0][None], masks[0][None]
    if any(m.shape != masks[0].shape for m in masks):  # frames with and without alpha (ComfyUI's cat would fail)
        masks = [m if m.shape == images[0].shape[:2] else torch.zeros(images[0].shape[:2]) for m in masks]
    return torch.stack(images), torch.stack(masks)


def bhwc_to_bchw(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 3, 1, 2)


def bchw_to_bhwc(images: torch.Tensor) -> torch.Tensor:
    return images.permute(0, 2, 3, 1)


def resize_views(views: torch.Tensor, size: int) -> torch.Tensor:
    """[N, H, W, C] -> [N, size, size, C], bilinear and antialiased (as PIL's bilinear resize, which the release's
    torchvision Resize runs on its views)."""
    if views.shape[1:3] == (size, size):
        return views
    resized = torch.nn.functional.interpolate(bhwc_to_bchw(views.float()), size=(size, size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return bchw_to_bhwc(resized).clamp(0, 1)


def srgb_to_linear(values):
    """The sRGB transfer function inverted (IEC 61966-2-1, as glTF 2.0 defines for colour textures): encoded values
    in 0..1 (numpy array or tensor) to linear light."""
    clipped = values.clip(0, 1)
    return ((clipped + 0.055) / 1.055) ** 2.4 * (clipped > 0.04045) + clipped / 12.92 * (clipped <= 0.04045)


def linear_to_srgb(values):
    """Linear light in 0..1 to sRGB-encoded values (IEC 61966-2-1); the inverse of ``srgb_to_linear``."""
    clipped = values.clip(0, 1)
    return (1.055 * clipped ** (1 / 2.4) - 0.055) * (clipped > 0.0031308) + clipped * 12.92 * (clipped <= 0.0031308)
