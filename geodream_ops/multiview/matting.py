"""Views on white, as the release feeds its 3D prior: the background removed, every pixel whose alpha is at most 128
(of 255) set to pure white (MVDream/t2i_single.py and zero123plus/rank_again/rank_and_resize.py:
``output[alpha <= 128, :3] = 255``). The prior was trained on white. ``output`` there is rembg's cut-out
(rembg.bg.naive_cutout, ``Image.composite`` onto transparent black): RGB x alpha / 255, so with U²-Net the edge
pixels the rule keeps are darkened by their alpha (``rembg_cutout``), opaque pixels stay as they are; a mask or alpha
channel given by the user (``views_on_white``) keeps every pixel the rule keeps as it is.

Masks follow ComfyUI's convention (LoadImage's MASK is 1 - alpha): [N, H, W] in 0..1, **1 marks the background**.
Two ways to find the background of generated views, both without a download:
- ``U2NetMatting``: rembg's U²-Net (what the release ran), read from a local ``u2net.onnx`` with onnxruntime and
  pre/post-processed as rembg's U2netSession does (rembg/sessions/u2net.py, base.py). Every release pass on a single
  view reads it with ``cv2.imread`` (BGR) and hands that array to rembg, which takes it for RGB: U²-Net sees the
  channels reversed, and so does ours (``channels="bgr"``).
- ``flat_background_mask``: no model. The pixels of the border's colour (within a tolerance) that connect to the
  image border. Zero123++ paints its views on a flat grey by design, so this always works for its outputs; it
  also works for any view on a flat backdrop."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from ..errors import GeoDreamError

log = logging.getLogger("GeoDream")

METHODS = ("auto", "rembg", "flat background", "none")
ALPHA_THRESHOLD = 128  # of 255: at or below, a pixel is background and becomes white (the release's rule)
FLAT_TOLERANCE = 12.0 / 255.0  # largest per-channel distance to the border colour still counted as background
U2NET_FILE = "u2net.onnx"  # rembg's U²-Net, as rembg names it
U2NET_SIZE = 320
U2NET_MEAN = (0.485, 0.456, 0.406)
U2NET_STD = (0.229, 0.224, 0.225)


def is_background(mask: torch.Tensor) -> torch.Tensor:
    """ComfyUI mask [..., H, W] (1 = background) -> bool, by the release's rule on alpha = 1 - mask in 8 bits."""
    alpha8 = ((1.0 - mask.float()) * 255.0).round()
    return alpha8 <= ALPHA_THRESHOLD


def on_white(views: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Views [N, H, W, 3] in 0..1 and their ComfyUI masks [N, H, W] -> the views with every background pixel pure
    white and every other pixel unchanged. A view left with no foreground is a GeoDreamError naming its index."""
    background = is_background(mask.to(views.device))
    for index, bg in enumerate(background):
        if bool(bg.all()):
            raise GeoDreamError(
                f"GeoDream: view {index} has no foreground: its mask marks every pixel as background. Check that "
                "view (and its mask: ComfyUI masks mark the background with 1, as LoadImage's; invert a mask "
                "that marks the object with InvertMask).")
    return torch.where(background.unsqueeze(-1), torch.ones_like(views[..., :3]), views[..., :3])


def check_foreground(views: torch.Tensor) -> None:
    """A GeoDreamError naming the first view [N, H, W, 3] that is pure white everywhere (nothing to reconstruct)."""
    empty = (views[..., :3] >= 1.0 - 0.5 / 255.0).flatten(1).all(1)
    if bool(empty.any()):
        index = int(empty.nonzero()[0])
        raise GeoDreamError(f"GeoDream: view {index} is blank white: it has no foreground for the 3D prior. Remove "
                            "that view and its camera, or check the matting that made it.")


def flat_background_mask(views: torch.Tensor, tolerance: float = FLAT_TOLERANCE) -> torch.Tensor:
    """Views [N, H, W, 3] in 0..1 -> ComfyUI masks [N, H, W] (1 = background, 0 = object): the pixels within
    ``tolerance`` (per channel) of the border's median colour that are connected (4-neighbours) to the border.
    Grey inside the object is kept: it does not reach the border through background."""
    masks = []
    for view in views[..., :3].float().cpu():
        border = torch.cat([view[0], view[-1], view[:, 0], view[:, -1]])
        colour = border.median(dim=0).values
        near = ((view - colour).abs().amax(-1) <= tolerance).numpy()
        labels, _ = ndimage.label(near)
        edge_labels = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        background = np.isin(labels, edge_labels[edge_labels > 0])
        masks.append(torch.from_numpy(background.astype(np.float32)))
    return torch.stack(masks).to(views.device)


class U2NetMatting:
    """rembg's U²-Net session on onnxruntime, for a local ``u2net.onnx`` (input [1, 3, 320, 320] float32, the
    first of its seven [1, 1, 320, 320] outputs is the saliency map, as rembg reads it). Per view, as
    rembg.sessions.u2net.U2netSession.predict: RGB resized to 320x320 (Lanczos), divided by its maximum,
    normalised by ImageNet's mean/std; the first output min-max normalised, to 8 bits (truncated), resized back to
    the view's size (Lanczos). That 8-bit mask is the alpha rembg.remove returns."""

    def __init__(self, path):
        path = Path(path)
        try:
            import onnxruntime
        except ImportError:
            raise GeoDreamError("GeoDream: rembg matting needs onnxruntime: pip install onnxruntime (or "
                                "onnxruntime-gpu), or use the 'flat background' matting.") from None
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=self._providers(onnxruntime))
        except Exception as err:  # a truncated download or another file
            raise GeoDreamError(f"GeoDream: could not read {path} as rembg's U²-Net ONNX model ({err}). Put rembg's "
                                f"{U2NET_FILE} (176 MB) there again, or use the 'flat background' matting.") from None
        self.input_name = self.session.get_inputs()[0].name

    @staticmethod
    def _providers(onnxruntime) -> list[str]:
        available = onnxruntime.get_available_providers()
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]

    def alpha8(self, view: torch.Tensor, channels: str = "bgr") -> np.ndarray:
        """One view [H, W, 3] (RGB) in 0..1 -> rembg's alpha, uint8 [H, W]. ``channels``: the order U²-Net is fed,
        "bgr" as the release's cv2.imread passes hand it over (t2i_single.py, rank_and_resize.py), "rgb" as its PIL
        pass on the Zero123++ grid (img_to_6mv.py)."""
        rgb = (view[..., :3].float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(rgb[..., ::-1]) if channels == "bgr" else rgb)
        small = np.asarray(image.resize((U2NET_SIZE, U2NET_SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
        small = small / max(small.max(), 1e-6)
        small = (small - np.array(U2NET_MEAN)) / np.array(U2NET_STD)
        batch = small.transpose(2, 0, 1)[None].astype(np.float32)
        saliency = self.session.run(None, {self.input_name: batch})[0][:, 0]
        lo, hi = saliency.min(), saliency.max()
        normalised = np.squeeze((saliency - lo) / (hi - lo) if hi > lo else np.zeros_like(saliency))
        mask = Image.fromarray((normalised * 255).astype(np.uint8))
        return np.asarray(mask.resize(image.size, Image.Resampling.LANCZOS))

    def masks(self, views: torch.Tensor, check=lambda: None, channels: str = "bgr") -> torch.Tensor:
        """Views [N, H, W, 3] -> ComfyUI masks [N, H, W] (1 = background), 1 - alpha / 255."""
        out = []
        for view in views:
            out.append(1.0 - torch.from_numpy(self.alpha8(view, channels).astype(np.float32)) / 255.0)
            check()
        return torch.stack(out).to(views.device)


def rembg_cutout(views: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """rembg's cut-out colour (rembg.bg.naive_cutout: Image.composite of the view onto transparent black): views
    [N, H, W, 3] in 0..1 times alpha = 1 - mask [N, H, W] (ComfyUI masks, 1 = background)."""
    return views[..., :3] * (1.0 - mask.to(views)).unsqueeze(-1)


def resolve_method(method: str, u2net_path=None) -> str:
    """The matting ``matte_views`` runs for ``method``: "auto" is rembg with a U²-Net file, else flat background."""
    if method not in METHODS:
        raise GeoDreamError(f"GeoDream: unknown matting {method!r}; use one of {METHODS}.")
    if method == "auto":
        return "rembg" if u2net_path is not None else "flat background"
    return method


def zero123plus_first_pass(tiles: torch.Tensor, u2net_path, size: int | None = None) -> torch.Tensor:
    """The release's first matting pass on a Zero123++ grid, up to what its second pass reads (img_to_6mv.py, then
    rank_and_resize.py): tiles [6, T, T, 3] (RGB, rig order) -> [6, S, S, 3] the object on black.

    rembg on the whole 3 x 2 grid as a PIL image (U²-Net fed RGB), its cut-out (RGB x alpha on transparent black)
    cropped into tiles saved as RGBA, each resized to ``size`` (torchvision Resize on the RGBA image: PIL's bilinear,
    which resizes RGBA premultiplied) when given, and read back by cv2.imread, which drops alpha. The second pass
    (``matte_views`` with rembg) then runs on that."""
    from .zero123plus import merge_grid, split_grid

    grid = merge_grid(tiles[..., :3].float().cpu())
    alpha = Image.fromarray(U2NetMatting(u2net_path).alpha8(grid, channels="rgb"))
    rgb = Image.fromarray((grid.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    cutout = torch.from_numpy(np.asarray(Image.composite(rgb, Image.new("RGBA", rgb.size, 0), alpha)).copy())
    out = []
    for tile in split_grid(cutout):
        image = Image.fromarray(tile.numpy())
        if size is not None:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        out.append(torch.from_numpy(np.asarray(image)[..., :3].astype(np.float32) / 255.0))
    return torch.stack(out).to(tiles.device)


def matte_views(views: torch.Tensor, method: str, u2net_path=None, check=lambda: None):
    """Views [N, H, W, 3] -> (views on white [N, H, W, 3], ComfyUI masks [N, H, W], the method that ran).

    ``method`` is one of METHODS: "rembg" needs ``u2net_path`` (one pass as the release's cv2 passes run it: U²-Net
    fed BGR, the kept pixels rembg's cut-out); "auto" is rembg when ``u2net_path`` is given (the release's matting)
    and the flat-background matting otherwise (kept pixels unchanged); "none" returns the views as they are with
    empty masks (for views already on white, or a mask made elsewhere)."""
    method = resolve_method(method, u2net_path)
    if method == "none":
        return views[..., :3], torch.zeros(views.shape[:3], device=views.device), method
    if method == "rembg":
        if u2net_path is None:
            raise GeoDreamError(f"GeoDream: rembg matting needs rembg's {U2NET_FILE} in models/rembg/ (the file "
                                "rembg downloads to ~/.u2net/); or choose 'flat background' matting.")
        masks = U2NetMatting(u2net_path).masks(views, check)
    else:
        masks = flat_background_mask(views)
    empty = is_background(masks).flatten(1).all(1)
    if bool(empty.any()):
        log.warning("GeoDream: %s matting found no object in view(s) %s; they are left unmatted (see the mask output)",
                    method, empty.nonzero().flatten().tolist())
        masks[empty] = 0.0
    if method == "rembg":
        views = rembg_cutout(views, masks)
    return on_white(views, masks), masks, method


def views_on_white(views: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """What BuildCostVolume feeds the prior: views [N, H, W, 3 or 4] (a fourth channel is alpha) and an optional
    ComfyUI mask [N or 1, H, W] (1 = background; it wins over an alpha channel) -> [N, H, W, 3] on white by the
    release's rule. An all-zero mask marks no background (LoadImage's placeholder for an image without alpha) and
    changes nothing. GeoDreamError for a mask that does not fit the views, or a view with no foreground left."""
    if mask is not None and not bool(mask.any()):
        mask = None
    if mask is not None:
        mask = mask.reshape(-1, *mask.shape[-2:]).float()
        if mask.shape[-2:] != views.shape[1:3]:
            raise GeoDreamError(f"GeoDream: the mask is {tuple(mask.shape[-2:])} but the views are "
                                f"{tuple(views.shape[1:3])}; give masks made from these views (one per view, or one "
                                "for all).")
        if mask.shape[0] not in (1, views.shape[0]):
            raise GeoDreamError(f"GeoDream: {mask.shape[0]} masks for {views.shape[0]} views; give one mask per view "
                                "(or one for all).")
        views = on_white(views, mask.expand(views.shape[0], -1, -1))
    elif views.shape[-1] == 4:
        views = on_white(views, 1.0 - views[..., 3])
    views = views[..., :3]
    check_foreground(views)
    return views
