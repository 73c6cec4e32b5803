"""Checks at the pack's stage boundaries and where a file is read: a tensor of the wrong shape is refused naming
the file, and non-finite data (NaN/inf) stops at the first node that sees it, naming the view or tensor, the likely
cause and the fix, instead of travelling on to a NaN volume, a NaN field or a file on disk."""
from __future__ import annotations

import torch

from .errors import GeoDreamError

FP16_CAUSE = ("the usual cause is an fp16 overflow (a VAE or a diffusion model run in half precision); run the node "
              "that made it in fp32 (its precision input) or check its input")


class NonFiniteData(GeoDreamError, ValueError):
    """NaN or infinite values where a stage needs numbers."""


def require_finite(tensor: torch.Tensor, what: str, cause: str = FP16_CAUSE) -> None:
    """Refuse ``tensor`` (any shape) holding NaN or inf, naming ``what``, how many values and ``cause``."""
    if tensor.is_floating_point() or tensor.is_complex():
        bad = ~torch.isfinite(tensor.detach())
        if bool(bad.any()):
            raise NonFiniteData(f"GeoDream: {what} holds {int(bad.sum())} NaN or infinite values of "
                                f"{tensor.numel()}; {cause}.")


def require_finite_views(views: torch.Tensor, what: str = "the views", cause: str = FP16_CAUSE) -> None:
    """Refuse a batch of views [N, ...] of which any holds NaN or inf, naming those views (1-based)."""
    if not views.is_floating_point():
        return
    bad = ~torch.isfinite(views.detach().reshape(views.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        numbers = [int(i) + 1 for i in bad.nonzero().flatten()]
        raise NonFiniteData(f"GeoDream: {what}: view{'s' if len(numbers) > 1 else ''} "
                            f"{', '.join(map(str, numbers))} of {views.shape[0]} hold NaN or infinite pixels; "
                            f"{cause}.")


def require_shape(tensor: torch.Tensor, expected: tuple, what: str, fix: str) -> None:
    """Refuse ``tensor`` unless its shape matches ``expected`` (None: any size on that axis), naming ``what``."""
    shape = tuple(tensor.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        wanted = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise GeoDreamError(f"GeoDream: {what} is {list(shape)}, expected {wanted}. {fix}")
