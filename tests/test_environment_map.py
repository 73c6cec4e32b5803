"""The neural environment map as threestudio builds it (neural_environment_map_background.py, networks.py
VanillaMLP, tiny-cuda-nn's SphericalHarmonics), and the texture pass asking it once per view as the release's
rasteriser does (nvdiff_rasterizer.py: position 0 off the mesh)."""
import math

import torch

from geodream_pack.geodream_ops.cameras import Cameras
from geodream_pack.geodream_ops.mesh.mesh_render import MeshRenderer
from geodream_pack.geodream_ops.texture.environment_map import EnvironmentMap


def _tcnn_sh3(x, y, z):
    """tiny-cuda-nn's SphericalHarmonics, degree 3: degree^2 = 9 outputs, bands 0-2 (spherical_harmonics.h)."""
    return [0.28209479177387814, -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
            1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.94617469575755997 * z * z - 0.31539156525251999,
            -1.0925484305920792 * x * z, 0.54627421529603959 * (x * x - y * y)]


def _release_frame(d):
    """Our direction in the release's frame (release_frame: our +X is its -Z, our +Y its +X, our +Z its -Y)."""
    return [d[1], -d[2], -d[0]]


def _release_environment(env, d):
    """threestudio's forward in plain Python: (d + 1) / 2 into tcnn (which maps back to 2 x - 1), then
    Linear-ReLU-Linear-ReLU-Linear, all without bias, then sigmoid."""
    n = math.sqrt(sum(c * c for c in d))
    u = [((c / n) + 1.0) / 2.0 for c in _release_frame(d)]
    h = _tcnn_sh3(*[2.0 * c - 1.0 for c in u])
    weights = [m.weight.detach().tolist() for m in env.mlp if isinstance(m, torch.nn.Linear)]
    for index, w in enumerate(weights):
        h = [sum(wi * hi for wi, hi in zip(row, h)) for row in w]
        if index < len(weights) - 1:
            h = [max(v, 0.0) for v in h]
    return [1.0 / (1.0 + math.exp(-v)) for v in h]


def test_environment_map_is_threestudios_network():
    torch.manual_seed(0)
    env = EnvironmentMap()
    linears = [m for m in env.mlp if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(16, 9), (16, 16), (3, 16)]
    assert all(m.bias is None for m in linears)
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.3, -0.8, 0.2], [-2.0, 1.0, 0.5]])
    expected = torch.tensor([_release_environment(env, d) for d in dirs.tolist()])
    torch.testing.assert_close(env(dirs), expected, atol=1e-6, rtol=0)


def test_texture_pass_background_is_one_colour_per_view_towards_the_centre():
    torch.manual_seed(0)
    env = EnvironmentMap()
    vertices = torch.tensor([[0.0, -0.2, -0.2], [0.0, 0.2, -0.2], [0.0, 0.0, 0.25]])
    faces = torch.tensor([[0, 1, 2]])
    cameras = Cameras.from_spherical(torch.tensor([10.0, -20.0]), torch.tensor([5.0, 60.0]), 2.0, 40.0)

    class Red(torch.nn.Module):
        def forward(self, points):
            return torch.tensor([1.0, 0.0, 0.0]).expand(points.shape[0], 3)

    images = MeshRenderer("cpu").colors(vertices, faces, cameras, 24, Red(), env)
    for b in range(2):
        position = cameras.c2w[b, :3, 3].tolist()
        flat = torch.tensor(_release_environment(env, [-c for c in position]))
        corner = images[b, :, :4, :4].reshape(3, -1).T
        torch.testing.assert_close(corner, flat.expand_as(corner), atol=1e-6, rtol=0)
    assert not torch.allclose(images[0, :, 0, 0], images[1, :, 0, 0])  # each view its own colour
