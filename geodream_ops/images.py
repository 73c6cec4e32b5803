"""Conversions between ComfyUI's IMAGE layout ([B, H, W, 3] floats in 0..1) and PIL / torch image layouts."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pil(image: torch.Tensor) -> Image.Image:
    """One [H, W, C] image in 0..1 to an 8-bit PIL image."""
    array = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def from_pil(image: Image.Image) -> tuple[torch.Tensor, torch.Tensor | None]:
    """PIL image -> ([H, W, 3] in 0..1, alpha [H, W] in 0..1 or None)."""
    alpha = None
    if "A" in image.getbands():
        alpha = torch.from_numpy(np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0)
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    return rgb, alpha


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
