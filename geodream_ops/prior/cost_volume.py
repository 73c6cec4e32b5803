"""The cost volume V of the 3D prior and the SDF it encodes with the geometry decoder: s(x) = f_g(E(x), V(x)).

This record travels on the GEODREAM_COST_VOLUME edge. Building it (feature variance + sparse 3D CNN) lives in the
prior's modules; refinement treats ``volume`` as a learnable tensor and keeps ``decoder`` frozen."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from .. import model_files
from ..errors import GeoDreamError
from ..tensor_checks import require_finite, require_shape
from .geometry_decoder import LATENT_CHANNELS, GeometryDecoder

FILE_FORMAT = "geodream-cost-volume/1"  # safetensors metadata tag of a saved cost volume


def check_volume(volume: torch.Tensor, bbox: torch.Tensor, what: str, fix: str, channels: int | None = None) -> None:
    """Refuse a cost volume that is not [1, C, D, H, W] (C = ``channels`` when given) with a [2, 3] box whose
    minimum lies below its maximum, or that holds NaN/inf; ``what`` names it (a file, a node's input)."""
    require_shape(volume, (1, channels, None, None, None), f"the cost volume of {what}", fix)
    require_shape(bbox, (2, 3), f"the box of {what}", fix)
    require_finite(volume, f"the cost volume of {what}")
    require_finite(bbox, f"the box of {what}")
    if not bool((bbox[0] < bbox[1]).all()):
        raise GeoDreamError(f"GeoDream: the box of {what} has a minimum corner not below its maximum "
                            f"({bbox.tolist()}). {fix}")


@dataclass
class CostVolume:
    volume: torch.Tensor  # [1, C, D, H, W]; depth runs along world z, height along y, width along x
    decoder: torch.nn.Module  # f_g: (points [P, 3] in the box, features [P, C]) -> (sdf [P], feature [P, F])
    bbox: torch.Tensor  # [2, 3]: the box's min and max corners in the world frame of cameras.py
    # NeuS's sharpness 1/s in world units (SDF-to-alpha), as the prior was trained with; None when unknown.
    inv_s: float | None = None

    def normalized(self, points: torch.Tensor) -> torch.Tensor:
        """World points to grid_sample's [-1, 1] coordinates of the box."""
        lo, hi = self.bbox[0].to(points), self.bbox[1].to(points)
        return (points - lo) / (hi - lo) * 2 - 1

    def interpolate(self, points: torch.Tensor, volume: torch.Tensor | None = None) -> torch.Tensor:
        """V(x): trilinear interpolation of the volume at world points [P, 3] -> [P, C] (zero outside the box)."""
        volume = self.volume if volume is None else volume
        grid = self.normalized(points).reshape(1, -1, 1, 1, 3).to(volume.dtype)
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return sampled.reshape(volume.shape[1], -1).t()

    def sdf(self, points: torch.Tensor, volume: torch.Tensor | None = None):
        """s(x) and the decoder's feature at world points [P, 3]; ``volume`` overrides V (e.g. a learnable copy)."""
        return self.decoder(points, self.interpolate(points, volume))

    def file_bytes(self) -> int:
        """About how large ``save``'s file is, in bytes (float32 tensors)."""
        return 4 * (self.volume.numel() + self.bbox.numel() + sum(v.numel() for v in self.decoder.state_dict().values()))

    def save(self, path) -> None:
        """V, its box and f_g's weights in one .safetensors file at ``path`` as it is given (callers make it atomic:
        a temporary of atomic.atomic_write or host.save_output)."""
        if not isinstance(self.decoder, GeometryDecoder):
            raise TypeError("GeoDream: only cost volumes with the prior's geometry decoder can be saved.")
        tensors = {"volume": self.volume, "bbox": self.bbox}
        if self.inv_s is not None:
            tensors["inv_s"] = torch.tensor(self.inv_s)
        tensors.update({f"decoder.{k}": v for k, v in self.decoder.state_dict().items()})
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path),
                  metadata={"format": FILE_FORMAT})

    @classmethod
    def load(cls, path, device="cpu") -> "CostVolume":
        """A cost volume written by ``save``; its decoder comes back frozen. GeoDreamError naming the file when it is
        unreadable or not one of ours."""
        what = "a cost volume saved by GeoDream Save Cost Volume"
        fix = "Pick another file, or build and save the cost volume again."
        tensors, metadata = model_files.read_safetensors(path, what, fix)
        if metadata.get("format") != FILE_FORMAT or "volume" not in tensors or "bbox" not in tensors:
            raise GeoDreamError(f"GeoDream: '{path}' is not {what}: it has no '{FILE_FORMAT}' tag and looks like "
                                f"{model_files.identify(tensors.keys())}. {fix}")
        check_volume(tensors["volume"], tensors["bbox"], f"'{path}'", fix, LATENT_CHANNELS)
        decoder = GeometryDecoder()
        model_files.load_weights(decoder, {k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")},
                                 path, what, fix)
        decoder.requires_grad_(False)
        inv_s = float(tensors["inv_s"]) if "inv_s" in tensors else None
        return cls(tensors["volume"].to(device), decoder.to(device), tensors["bbox"].to(device), inv_s)
