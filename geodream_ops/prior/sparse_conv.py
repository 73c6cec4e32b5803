"""Sparse 3x3x3 convolutions over the occupied voxels, with the semantics of torchsparse 1.4 (the release's library),
on spconv when it is importable and on dense ``torch.nn.functional`` convolutions otherwise. Both give the same
numbers: a sparse convolution equals a dense one on the zero-filled grid, read at the active sites.

Three kinds, as in SparseNeuS's SparseCostRegNet:
- ``subm``: stride 1, the output sites are the input sites (torchsparse's stride-1 Conv3d).
- ``down``: stride 2; output sites are the even points within one voxel of an input, not below the input's minimum
  on any axis (torchsparse's spdownsample keeps only those), halved.
- ``up``: the transpose of ``down``, read back at the finer level's sites (torchsparse's transposed Conv3d).
Coordinates are voxel indices [P, 3] along the release's (x, y, z) axes; weights are stored as spconv stores them,
[out, kx, ky, kz, in], where k = offset + 1."""
from __future__ import annotations

import itertools
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import GeoDreamError

log = logging.getLogger("GeoDream")

BACKENDS = ("spconv", "dense")
_OFFSETS = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)))


@dataclass
class SparseVolume:
    coords: torch.Tensor  # [P, 3] long voxel indices, unique
    features: torch.Tensor  # [P, C]
    shape: tuple[int, int, int]  # grid size at this level

    def dense(self) -> torch.Tensor:
        """[1, C, *shape], zero where no voxel is active."""
        grid = self.features.new_zeros(self.features.shape[1], *self.shape)
        grid[:, self.coords[:, 0], self.coords[:, 1], self.coords[:, 2]] = self.features.t()
        return grid.unsqueeze(0)


def select_backend(preferred: str | None = None, device=None) -> str:
    """'spconv' when a build of it for ``device`` imports (unless GEODREAM_SPARSE_BACKEND or ``preferred`` says
    'dense'), else 'dense'."""
    choice = preferred or os.environ.get("GEODREAM_SPARSE_BACKEND", "auto")
    if choice not in (*BACKENDS, "auto"):
        raise ValueError(f"GeoDream: unknown sparse backend {choice!r}; use one of {BACKENDS} or 'auto'.")
    if choice == "dense":
        return "dense"
    try:
        import spconv.pytorch  # noqa: F401
        from spconv.cppconstants import CPU_ONLY_BUILD
    except ImportError:
        problem = "spconv is not installed (pip install spconv, or spconv-cu12x for CUDA)"
    else:
        if not (CPU_ONLY_BUILD and torch.device(device or "cpu").type == "cuda"):
            return "spconv"
        problem = "the installed spconv is its CPU-only build (pip install spconv-cu12x for CUDA)"
    if choice == "spconv":
        raise RuntimeError(f"GeoDream: the spconv backend was asked for but {problem}.")
    return "dense"


def downsample_coords(coords: torch.Tensor) -> torch.Tensor:
    """Output sites of a stride-2 3x3x3 convolution, by torchsparse's rule (see the module docstring)."""
    candidates = (coords.unsqueeze(1) + _OFFSETS.to(coords.device)).reshape(-1, 3)
    keep = (candidates % 2 == 0).all(1) & (candidates >= coords.min(0).values).all(1)
    return torch.unique(candidates[keep] // 2, dim=0)


def downsample_shape(shape) -> tuple[int, int, int]:
    # torchsparse does not bound outputs above: an odd last index reaches one site past the halved grid.
    return tuple(n // 2 + 1 for n in shape)


def _lookup(coords: torch.Tensor, features: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Rows of ``features`` (at ``coords``) for the sites ``query``; zero for sites it does not hold."""
    size = int(max(coords.max(), query.max())) + 1
    keys = (coords[:, 0] * size + coords[:, 1]) * size + coords[:, 2]
    wanted = (query[:, 0] * size + query[:, 1]) * size + query[:, 2]
    keys, order = keys.sort()
    where = torch.searchsorted(keys, wanted).clamp_max(len(keys) - 1)
    found = keys[where] == wanted
    return features[order[where]] * found.unsqueeze(-1)


def _dense_conv(x: SparseVolume, weight: torch.Tensor, kind: str, out_coords: torch.Tensor) -> torch.Tensor:
    grid = x.dense()
    if kind == "subm":
        out = F.conv3d(grid, weight.permute(0, 4, 1, 2, 3), padding=1)
    elif kind == "down":
        out = F.conv3d(F.pad(grid, (1, 2) * 3), weight.permute(0, 4, 1, 2, 3), stride=2)
    else:
        out = F.conv_transpose3d(grid, weight.permute(4, 0, 1, 2, 3), stride=2, padding=1)
    return out[0][:, out_coords[:, 0], out_coords[:, 1], out_coords[:, 2]].t()


@contextmanager
def _one_cpu_thread(device: torch.device):
    """spconv 2.3.8's CPU kernels race when torch runs them on several threads (measured: results change from run
    to run by O(1) with 2 threads, never with 1)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_sites(coords: torch.Tensor, shape) -> None:
    """spconv reads out of bounds (a crash, not an exception) for sites outside the grid or given twice."""
    inside = (coords >= 0).all() and (coords < torch.tensor(shape, device=coords.device)).all()
    if not inside or torch.unique(coords, dim=0).shape[0] != coords.shape[0]:
        raise GeoDreamError(f"GeoDream: sparse convolution sites must be unique voxels inside the {tuple(shape)} grid; "
                            "refusing to pass them to spconv (set GEODREAM_SPARSE_BACKEND=dense to compare).")


def _spconv_conv(x: SparseVolume, weight: torch.Tensor, kind: str, out_coords: torch.Tensor) -> torch.Tensor:
    import spconv.pytorch as spconv

    out_channels, in_channels = weight.shape[0], weight.shape[-1]
    shape = list(x.shape)
    if kind == "subm":
        module = spconv.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False)
    elif kind == "down":
        module = spconv.SparseConv3d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        shape = [n + 1 for n in shape]  # reach torchsparse's extra site past the halved grid
    else:
        # Its output grid (2n - 1) covers the finer level, whose sites are then read back.
        module = spconv.SparseConvTranspose3d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
    _check_sites(x.coords, x.shape)
    indices = torch.cat([torch.zeros_like(x.coords[:, :1]), x.coords], dim=1).int()
    tensor = spconv.SparseConvTensor(x.features, indices, shape, 1)
    with _one_cpu_thread(x.features.device):
        out = torch.func.functional_call(module.to(x.features.device), {"weight": weight}, (tensor,))
    return _lookup(out.indices[:, 1:].long(), out.features, out_coords)


def sparse_conv(x: SparseVolume, weight: torch.Tensor, kind: str, out_coords: torch.Tensor, backend: str) -> torch.Tensor:
    """Features [len(out_coords), out] of a 3x3x3 sparse convolution of ``kind`` ('subm', 'down', 'up')."""
    if kind not in ("subm", "down", "up"):
        raise ValueError(f"unknown sparse convolution kind {kind!r}")
    if backend == "spconv":
        return _spconv_conv(x, weight, kind, out_coords)
    return _dense_conv(x, weight, kind, out_coords)
