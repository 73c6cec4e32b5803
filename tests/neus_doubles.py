"""Test doubles for refinement: a cost volume whose decoder is a sphere offset by the volume's first channel."""
import torch

from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.texture.hash_grid import HashGridConfig
from geodream_pack.geodream_ops.refine.neus_field import FieldSettings
from geodream_pack.geodream_ops.refine.neus_renderer import RenderSettings
from geodream_pack.geodream_ops.refine.refine_neus import RefineSettings


class OffsetSphereDecoder(torch.nn.Module):
    """f_g stand-in: s(x) = |x| - 0.5 + V_0(x); the feature is V(x) itself."""

    def forward(self, points, features):
        return points.norm(dim=-1) - 0.5 + features[:, 0], features


def sphere_cost_volume(channels=4, size=8) -> CostVolume:
    return CostVolume(torch.zeros(1, channels, size, size, size), OffsetSphereDecoder(),
                      torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))


def tiny_settings(**overrides) -> RefineSettings:
    field = FieldSettings(hash_grid=HashGridConfig(n_levels=4, log2_hashmap_size=10, base_resolution=4,
                                                   max_resolution=32).to_dict(), color_hidden=16, variance_init=0.3)
    settings = dict(steps=4, resolution=16, field=field, render=RenderSettings(n_coarse=16, n_importance=8, chunk_rays=100),
                    checkpoint_every=2)
    settings.update(overrides)
    return RefineSettings(**settings)

