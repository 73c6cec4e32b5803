"""Loading the released SparseNeuS lod0 weights (One-2-3-45's ``ckpt_215000.pth``, which GeoDream loads).

The file is a dict of state dicts by network; we read ``pyramid_feature_network`` (f_2D) and ``sdf_network_lod0``
(compression, f_3D, f_g) and ignore the rest (rendering/texture networks, lod1, optimiser: GeoDream discards f_t).
Sparse kernels were saved by torchsparse 1.4 as ``kernel`` [27, in, out], offset index k = 9 (dz+1) + 3 (dy+1) + (dx+1)
(x fastest, its get_kernel_offsets for odd kernels); spconv keeps ``weight`` [out, kx, ky, kz, in]. Every tensor
our model needs must be there with the right shape, or loading stops with a message naming each problem."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .. import model_files
from ..errors import GeoDreamError
from .model import PriorModel

log = logging.getLogger("GeoDream")

SECTIONS = ("pyramid_feature_network", "sdf_network_lod0", "variance_network_lod0")
# Batch-norm step counters only matter in training; inplace_abn never stored them.
OPTIONAL_SUFFIXES = ("num_batches_tracked",)
RELEASE_NAME = "ckpt_215000.pth"


class CheckpointError(GeoDreamError, ValueError):
    pass


def torchsparse_to_spconv(kernel: torch.Tensor) -> torch.Tensor:
    """[27, in, out] (z slowest, x fastest) -> [out, kx, ky, kz, in]."""
    if kernel.ndim != 3 or kernel.shape[0] != 27:
        raise CheckpointError(f"expected a torchsparse 3x3x3 kernel [27, in, out], got {tuple(kernel.shape)}")
    return kernel.reshape(3, 3, 3, *kernel.shape[1:]).permute(4, 2, 1, 0, 3).contiguous()


def _source_name(name: str) -> str:
    """Our parameter name -> the checkpoint's (sparse kernels are ``kernel`` there, ``weight`` here)."""
    if name.startswith("sparse_costreg_net.") and name.endswith(".net.0.weight"):
        return name[: -len("weight")] + "kernel"
    return name


def convert_state_dict(checkpoint: dict, model: PriorModel) -> dict:
    """The checkpoint's tensors, renamed and converted to ``model``'s state dict; CheckpointError on any problem."""
    missing_sections = [s for s in SECTIONS if not isinstance(checkpoint.get(s), dict)]
    if missing_sections:
        raise CheckpointError(f"the checkpoint has no {', '.join(missing_sections)} section(s); it holds "
                              f"{sorted(k for k in checkpoint if isinstance(k, str))}. Is it SparseNeuS's lod0 {RELEASE_NAME}?")
    converted, missing, mismatched = {}, [], []
    expected = model.state_dict()
    for name, target in expected.items():
        section, _, rest = name.partition(".")
        source_name = _source_name(rest)
        tensor = checkpoint[section].get(source_name)
        if tensor is None:
            if not name.endswith(OPTIONAL_SUFFIXES):
                missing.append(f"{section}.{source_name}")
            continue
        if source_name.endswith(".kernel"):
            try:
                tensor = torchsparse_to_spconv(tensor)
            except CheckpointError as err:
                mismatched.append(f"{section}.{source_name}: {err}")
                continue
        if tuple(tensor.shape) != tuple(target.shape):
            mismatched.append(f"{section}.{source_name}: shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
            continue
        converted[name] = tensor.to(target.dtype)
    known = {_source_name(n.partition(".")[2]) for n in expected}
    unexpected = [f"{s}.{k}" for s in SECTIONS for k in checkpoint[s] if k not in known]
    if missing or mismatched:
        problems = [f"missing: {k}" for k in missing] + [f"mismatched: {k}" for k in mismatched]
        raise CheckpointError("the prior checkpoint does not match SparseNeuS lod0:\n  " + "\n  ".join(problems))
    if unexpected:
        log.warning("GeoDream: the prior checkpoint has tensors the prior does not use: %s", ", ".join(unexpected))
    return converted


PRIOR_FILE = f"SparseNeuS's lod0 prior checkpoint ({RELEASE_NAME} of One-2-3-45 / GeoDream)"
PRIOR_FIX = (f"Pick {RELEASE_NAME} in models/geodream/; if that is the file, download it again from the One-2-3-45 "
             "release (its sparseneus checkpoint, as GeoDream's README links it).")


def load_prior(path, device="cpu") -> PriorModel:
    """The prior from One-2-3-45's ``ckpt_215000.pth``; GeoDreamError (CheckpointError) naming the file for anything
    unreadable or of another model."""
    path = Path(path)
    checkpoint = model_files.read_checkpoint(path, PRIOR_FILE, PRIOR_FIX)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"GeoDream: '{path}' is not {PRIOR_FILE}: it holds a {type(checkpoint).__name__}, not "
                              f"a dict of state dicts. {PRIOR_FIX}")
    model = PriorModel()
    try:
        state = convert_state_dict(checkpoint, model)
    except CheckpointError as err:
        raise CheckpointError(f"GeoDream: '{path}': {err} It looks like {model_files.identify(checkpoint.keys())}. "
                              f"{PRIOR_FIX}") from None
    model.load_state_dict(state, strict=False)
    log.info("GeoDream: loaded the SparseNeuS lod0 prior from %s (%d tensors, sparse kernels converted to spconv layout)",
             path, len(state))
    return model.to(device).eval()
