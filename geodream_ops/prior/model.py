"""The 3D prior of GeoDream (SparseNeuS lod0 of One-2-3-45): views + cameras -> cost volume V and decoder f_g.

    F_i = f_2D(I_i)                      fused 56-channel pyramid, compressed to 16 channels
    cost(h) = [Var_i F_i(P_i h), Mean_i F_i(P_i h)]   over the views that see voxel h (>= 2 of them)
    V = f_3D(cost)                       sparse U-Net over those voxels, 16 channels, zero elsewhere
    s(x) = f_g(E(x), V(x))
The grid is the release's: 96^3 voxel centres spanning its [-1, 1]^3, in its frame, normalised by the box the
release computes for the view set from its cameras (release_frame.view_set_box; the volume carries it). V is then
upsampled (trilinear, align_corners=False, as GeoDream's script) to the requested resolution (150 in the release)
and handed over in the pack's frame.

The release exports V with its networks in training mode, so every batch norm normalises by the current batch
(f_2D's and the compression's InPlaceABN over all views x pixels, f_3D's over each sparse level's active voxels) and
never by the checkpoint's running statistics; NORM_STATISTICS keeps the latter as an option. Views are expected on
white (matting.py), as the prior was trained and as the release feeds it."""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from . import release_frame
from ..cameras import Cameras
from .cost_volume import CostVolume
from ..errors import GeoDreamError
from .feature_net import FEATURE_CHANNELS, ConvBnAct, FeatureNet
from .geometry_decoder import LATENT_CHANNELS, GeometryDecoder
from .sparse_conv import SparseVolume, select_backend
from .sparse_unet import SparseCostRegNet
from .view_variance import variance_and_mean
from .voxel_projection import project_voxels, sample_views

log = logging.getLogger("GeoDream")

COMPRESSED_CHANNELS = 16
MIN_VIEWS = 2  # a voxel enters the sparse volume when at least this many views see it
CHUNK = 1 << 16  # voxels projected at a time, to bound memory
# Which statistics every batch norm of f_2D, the compression and f_3D normalises with: "batch" (the current views'
# pixels and the active voxels of each sparse level, as the release exports its volume: its networks stay in
# training mode) or "running" (the checkpoint's stored running statistics, what eval mode would use).
NORM_STATISTICS = ("batch", "running")


class SdfNetworkLod0(nn.Module):
    """The checkpoint's ``sdf_network_lod0`` section: feature compression, f_3D and f_g."""

    def __init__(self):
        super().__init__()
        self.compress_layer = ConvBnAct(FEATURE_CHANNELS, COMPRESSED_CHANNELS)
        self.sparse_costreg_net = SparseCostRegNet(2 * COMPRESSED_CHANNELS, LATENT_CHANNELS)
        self.sdf_layer = GeometryDecoder()


class VarianceNetwork(nn.Module):
    """The checkpoint's ``variance_network_lod0``: NeuS's deviation, inv_s = exp(10 * variance) (release units)."""

    def __init__(self):
        super().__init__()
        self.variance = nn.Parameter(torch.tensor(0.3))


class PriorModel(nn.Module):
    """f_2D, f_3D, f_g and NeuS's deviation with the checkpoint's section names (``pyramid_feature_network``,
    ``sdf_network_lod0``, ``variance_network_lod0``)."""

    def __init__(self):
        super().__init__()
        self.pyramid_feature_network = FeatureNet()
        self.sdf_network_lod0 = SdfNetworkLod0()
        self.variance_network_lod0 = VarianceNetwork()
        self.requires_grad_(False)

    @property
    def decoder(self) -> GeometryDecoder:
        return self.sdf_network_lod0.sdf_layer

    def inv_s(self, box: torch.Tensor = release_frame.BBOX) -> float:
        """The trained sharpness in our length unit for the frame ``box`` [2, 3] (f_g's SDF is scaled into it by
        the box's half side)."""
        return math.exp(10.0 * float(self.variance_network_lod0.variance)) / float(release_frame.box_scale(box))

    def cost_volume(self, release_volume: torch.Tensor, box: torch.Tensor = release_frame.BBOX) -> CostVolume:
        """A volume in the release's [1, C, X, Y, Z] layout, normalised by the frame ``box`` [2, 3] (default the pose
        table's), as a CostVolume of our frame over that box, with f_g working in it and inv_s."""
        box = box.to(release_volume.device, torch.float32)
        return CostVolume(release_frame.volume_from_release(release_volume), self.decoder.in_frame(box), box,
                          self.inv_s(box))

    def device(self) -> torch.device:
        return next(self.parameters()).device


def voxel_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices [G^3, 3] along the release's (x, y, z) and their centres in the release frame, spanning [-1, 1]."""
    axis = torch.arange(size)
    coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    return coords, coords.float() * (2.0 / (size - 1)) - 1.0


def build_steps(grid_size: int = release_frame.RELEASE_GRID) -> int:
    """How many times build_cost_volume calls ``check``: for a progress bar."""
    return math.ceil(grid_size**3 / CHUNK) + 2


@contextmanager
def norm_statistics(model: PriorModel, statistics: str):
    """Runs ``model``'s batch norms on ``statistics`` (one of NORM_STATISTICS) inside the block, then restores its
    mode. Batch statistics are PyTorch's training mode; no running statistic is ever updated."""
    if statistics not in NORM_STATISTICS:
        raise GeoDreamError(f"GeoDream: unknown normalisation statistics {statistics!r}; use one of {NORM_STATISTICS}.")
    was_training = model.training
    model.train(statistics == "batch")
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def view_features(model: PriorModel, views: torch.Tensor, image_size: int) -> torch.Tensor:
    """IMAGE batch [N, H, W, 3] in 0..1 -> compressed features [N, 16, S, S] at the trained image size S. In
    training mode every InPlaceABN normalises over the whole batch (N views x S x S pixels), as in the release."""
    images = views[..., :3].permute(0, 3, 1, 2).to(model.device(), torch.float32)
    if images.shape[-2:] != (image_size, image_size):
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    return model.sdf_network_lod0.compress_layer(model.pyramid_feature_network(images))


@torch.no_grad()
def sparse_cost(features: torch.Tensor, cameras: Cameras, grid_size: int, check=lambda: None,
                box: torch.Tensor = release_frame.BBOX) -> SparseVolume:
    """Variance + mean of the views' features at every voxel seen by >= 2 views, as a sparse volume (release frame
    normalised by ``box``, release_frame.view_set_box)."""
    device = features.device
    size = features.shape[-1]
    coords, centres = voxel_grid(grid_size)
    cameras = cameras.to(device)
    kept_coords, costs = [], []
    for start in range(0, len(coords), CHUNK):
        points = release_frame.from_release(centres[start:start + CHUNK].to(device), box)
        pixels, seen = project_voxels(points, cameras, size, size)
        keep = seen.sum(0) >= min(MIN_VIEWS, len(cameras))
        samples = sample_views(features, pixels[:, keep], seen[:, keep])
        kept_coords.append(coords[start:start + CHUNK].to(device)[keep])
        costs.append(variance_and_mean(samples, seen[:, keep]))
        check()
    return SparseVolume(torch.cat(kept_coords), torch.cat(costs), (grid_size,) * 3)


@torch.no_grad()
def build_cost_volume(model: PriorModel, views: torch.Tensor, cameras: Cameras,
                      resolution: int = release_frame.RELEASE_VOLUME_RESOLUTION,
                      grid_size: int = release_frame.RELEASE_GRID, image_size: int = release_frame.RELEASE_IMAGE_SIZE,
                      backend: str | None = None, check=lambda: None, statistics: str = "batch") -> CostVolume:
    """V_p and f_g from N views [N, H, W, 3] in 0..1 (on white) and their cameras (pack frame), over the box the
    release's data loader computes from these cameras (release_frame.prior_box: the pose table's for the text
    path's 14 views, a 4 % larger one for Zero123's 31; the pose table's for sparser sets). ``statistics`` picks the batch norms' statistics
    (NORM_STATISTICS; "batch" is the release's export). ``check`` is called between steps (interrupts)."""
    if views.shape[0] != len(cameras):
        raise ValueError(f"GeoDream: {views.shape[0]} views but {len(cameras)} cameras; give one camera per view.")
    backend = select_backend(backend, model.device())
    log.info("GeoDream: building the cost volume (%d views, %d^3 grid) with the %s sparse backend, %s statistics",
             len(cameras), grid_size, backend, statistics)
    box = release_frame.prior_box(cameras)
    log.info("GeoDream: the views' normalisation box has half side %.4f, centre %s (release_frame.prior_box)",
             float(release_frame.box_scale(box)), [round(v, 4) for v in release_frame.box_centre(box).tolist()])
    with norm_statistics(model, statistics):
        features = view_features(model, views, image_size)
        check()
        cost = sparse_cost(features, cameras, grid_size, check, box)
        if len(cost.coords) == 0:
            raise ValueError("GeoDream: no voxel of the [-1, 1]^3 volume is seen by two views; check that the "
                             "cameras look at the origin from about the release's distance (1.2 at a 49 degree "
                             "field of view).")
        regularised = model.sdf_network_lod0.sparse_costreg_net(cost, backend)
    check()
    volume = SparseVolume(cost.coords, regularised, cost.shape).dense()
    if resolution != grid_size:
        volume = F.interpolate(volume, size=(resolution,) * 3, mode="trilinear", align_corners=False)
    return model.cost_volume(volume, box)


def cost_volume_from_release(volume: torch.Tensor, model: PriorModel, cameras: Cameras | None = None) -> CostVolume:
    """A volume saved by GeoDream's release (con_volume_lod_150.pth, [1, 16, X_r, Y_r, Z_r]) in the pack's frame,
    with the prior's f_g (the release refines it with the same frozen decoder). The file holds no scale_mat: the box
    is recomputed from ``cameras``, those of the views it was built from (release_frame.prior_box), or is the
    pose table's (the text path) without them."""
    if volume.ndim != 5 or volume.shape[:2] != (1, LATENT_CHANNELS):
        raise ValueError(f"GeoDream: a release cost volume is [1, {LATENT_CHANNELS}, X, Y, Z], got {tuple(volume.shape)}.")
    box = release_frame.BBOX if cameras is None else release_frame.prior_box(cameras)
    return model.cost_volume(volume.to(model.device(), torch.float32), box)
