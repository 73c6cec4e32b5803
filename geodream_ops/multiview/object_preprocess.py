"""The input Zero123++ expects: one square image of a centred object on the grey that the SD VAE encodes to zero.

Zero123++'s pipeline pastes RGBA inputs on grey 127/255, and its demo's "rescale" option crops the object's
bounding box and pads it so the longer side fills 0.75 of the square. We do both from an IMAGE plus an optional
MASK in ComfyUI's convention (LoadImage's MASK is 1 - alpha: 1 marks background).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import GeoDreamError

GREY = 127.0 / 255.0
OBJECT_FILL = 0.75


def object_on_grey(image: torch.Tensor, mask: torch.Tensor | None = None, fill: float = OBJECT_FILL,
                   alpha_threshold: float = 0.5, background: float = GREY) -> torch.Tensor:
    """[H, W, 3] image (0..1) and optional [H, W] ComfyUI mask -> [S, S, 3] on grey, S = the longer input side.

    With a mask the object (alpha above ``alpha_threshold``) is composited on grey, its bounding box centred and
    scaled so its longer side spans ``fill`` of the square. Without one (or with an all-zero one) the image is
    taken as already composed and only padded to a square with grey. ``background``: the grey level to composite
    on (1.0: white, as Zero123's input, the release's ``image_preprocess_nosave``)."""
    if image.ndim != 3 or image.shape[-1] < 3:
        raise GeoDreamError(f"GeoDream: expected one [H, W, 3] image, got {tuple(image.shape)}")
    rgb = image[..., :3].float()
    # An all-zero mask marks no background: ComfyUI's LoadImage gives one (64x64) for images without alpha.
    if mask is None or not mask.any():
        return _pad_square(rgb, torch.ones(rgb.shape[:2]), background=background)
    alpha = 1.0 - mask.float().to(rgb.device)
    if alpha.shape != rgb.shape[:2]:
        raise GeoDreamError(f"GeoDream: the mask is {tuple(alpha.shape)} but the image is {tuple(rgb.shape[:2])}; "
                         "use the mask that came with the image (LoadImage's MASK output).")
    rows, cols = torch.nonzero(alpha > alpha_threshold, as_tuple=True)
    if rows.numel() == 0:
        raise GeoDreamError("GeoDream: the mask leaves no object visible (ComfyUI masks mark the background with 1; "
                         "connect LoadImage's MASK, or leave the mask unconnected for an image already on grey).")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    rgb, alpha = rgb[top:bottom, left:right], alpha[top:bottom, left:right]
    side = max(rgb.shape[0], rgb.shape[1])
    square = max(int(round(side / fill)), side)
    return _pad_square(rgb, alpha, square, background)


def _pad_square(rgb: torch.Tensor, alpha: torch.Tensor, square: int | None = None, background: float = GREY) -> torch.Tensor:
    """Composite on ``background`` and centre in a square of ``square`` pixels (default: the longer side)."""
    h, w = rgb.shape[:2]
    square = square or max(h, w)
    out = torch.full((square, square, 3), background, dtype=rgb.dtype, device=rgb.device)
    top, left = (square - h) // 2, (square - w) // 2
    a = alpha[..., None].to(rgb)
    out[top:top + h, left:left + w] = rgb * a + background * (1 - a)
    return out


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """[S, S, 3] -> [size, size, 3], antialiased (the demo resizes with Lanczos)."""
    chw = image.permute(2, 0, 1)[None]
    return F.interpolate(chw, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1).permute(1, 2, 0)
