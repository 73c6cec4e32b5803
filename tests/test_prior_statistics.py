"""The prior's normalisation as the release runs it: batch statistics (InPlaceABN over views x pixels, torchsparse's
BatchNorm over each level's active voxels) and InPlaceABN's |gamma| + eps, checked against the formulas by hand."""
import pytest
import torch

from geodream_pack.geodream_ops import cameras as C
from geodream_pack.geodream_ops.prior.feature_net import InPlaceABNForward
from geodream_pack.geodream_ops.prior.model import build_cost_volume
from geodream_pack.geodream_ops.prior.sparse_conv import SparseVolume, sparse_conv
from geodream_pack.geodream_ops.prior.sparse_unet import SparseBlock

from geodream_pack.geodream_ops.prior.prior_checkpoint import load_prior

from tests.twins_prior import random_prior, release_checkpoint

EPS = 1e-5


def _leaky(y):
    return torch.where(y > 0, y, 0.01 * y)


def _inplace_abn_module(channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    bn = InPlaceABNForward(channels).requires_grad_(False)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-1.5, 0.7, -0.2, 2.0][:channels]))
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(5 + torch.randn(channels, generator=g))
        bn.running_var.copy_(20 + torch.rand(channels, generator=g))
    return bn


def test_inplace_abn_batch_statistics_by_hand():
    """y = leaky_relu((x - mean) / sqrt(var + eps) * (|gamma| + eps) + beta), mean/var (biased) over N, H, W."""
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1)) * 3 + 1
    bn = _inplace_abn_module(4).train()
    expected = torch.empty_like(x)
    for c in range(4):
        values = x[:, c]
        mean = values.sum() / values.numel()
        var = ((values - mean) ** 2).sum() / values.numel()
        scale = abs(float(bn.weight[c])) + EPS
        expected[:, c] = _leaky((values - mean) / torch.sqrt(var + EPS) * scale + bn.bias[c])
    running_before = bn.running_mean.clone()
    assert torch.allclose(bn(x), expected, atol=1e-5)
    assert torch.equal(bn.running_mean, running_before)  # never trained, never updated


def test_inplace_abn_running_statistics_by_hand():
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    bn = _inplace_abn_module(4).eval()
    scale = (bn.weight.abs() + EPS)[None, :, None, None]
    mean, var = bn.running_mean[None, :, None, None], bn.running_var[None, :, None, None]
    expected = _leaky((x - mean) / torch.sqrt(var + EPS) * scale + bn.bias[None, :, None, None])
    assert torch.allclose(bn(x), expected, atol=1e-6)
    # The sign of gamma never matters, in either mode.
    with torch.no_grad():
        bn.weight.neg_()
    assert torch.allclose(bn(x), expected, atol=1e-6)


def _volume(n=11, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, n, n, generator=g) < 0.05).nonzero()
    return SparseVolume(coords, torch.randn(len(coords), channels, generator=g) + 2, (n, n, n))


def test_sparse_batch_norm_uses_the_active_voxels_of_its_level_only():
    x = _volume()
    block = SparseBlock(3, 4, "subm").train().requires_grad_(False)
    with torch.no_grad():
        block.net[1].weight.copy_(torch.tensor([1.2, -0.8, 0.5, 1.0]))
        block.net[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        block.net[1].running_mean.fill_(7.0)
        block.net[1].running_var.fill_(30.0)
    out = block(x, x.coords, x.shape, "dense")
    conv = sparse_conv(x, block.net[0].weight, "subm", x.coords, "dense")
    expected = torch.empty_like(conv)
    for c in range(4):  # torchsparse's BatchNorm1d in training mode over the P active sites; gamma used as it is
        values = conv[:, c]
        mean = values.sum() / len(values)
        var = ((values - mean) ** 2).sum() / len(values)
        y = (values - mean) / torch.sqrt(var + EPS) * block.net[1].weight[c] + block.net[1].bias[c]
        expected[:, c] = y.clamp_min(0)
    assert torch.allclose(out.features, expected, atol=1e-5)
    # Statistics over the whole grid (inactive sites as zeros) would be far from these.
    sites = x.shape[0] * x.shape[1] * x.shape[2]
    assert len(conv) < sites / 3
    grid_mean = conv.sum(0) / sites
    assert (grid_mean - conv.mean(0)).abs().max() > 0.3


def _views(n, size=32):
    """A coloured ball on white, shaded differently per view."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ball = (xx**2 + yy**2 < 0.45).float()[..., None]
    shade = torch.linspace(0.2, 0.8, n)[:, None, None, None]
    colour = torch.stack([shade, 1 - shade, 0.5 * torch.ones_like(shade)], -1).reshape(n, 1, 1, 3)
    return ball * colour + (1 - ball)


@pytest.fixture(scope="module")
def twin_and_views():
    return random_prior(3), _views(6), C.zero123plus_rig("v1.1")


def _build(model, views, cams, backend="dense", statistics="batch"):
    return build_cost_volume(model, views, cams, resolution=16, grid_size=16, backend=backend,
                             statistics=statistics).volume


def _edited_checkpoint(folder, name, edit):
    """The twin written in the release's file layout with ``edit(key, tensor)`` applied to every tensor, loaded back
    through the real loader."""
    checkpoint = release_checkpoint(random_prior(3))
    for section in ("pyramid_feature_network", "sdf_network_lod0"):
        checkpoint[section] = {k: edit(k, v) for k, v in checkpoint[section].items()}
    path = folder / name
    torch.save(checkpoint, path)
    return load_prior(path)


def test_volume_ignores_gamma_signs_and_stored_running_statistics(twin_and_views, tmp_path):
    model, views, cams = twin_and_views
    reference = _build(_edited_checkpoint(tmp_path, "same.pth", lambda k, v: v), views, cams)
    assert torch.allclose(reference, _build(model, views, cams), atol=1e-6)
    assert reference.abs().max() > 0.1
    checkpoint = release_checkpoint(model)
    gammas = [k for s in ("pyramid_feature_network", "sdf_network_lod0") for k in checkpoint[s] if k.endswith("bn.weight")]
    assert len(gammas) == 9  # every InPlaceABN: the 8 of f_2D and compress_layer's
    flipped = _edited_checkpoint(tmp_path, "flipped.pth", lambda k, v: -v if k.endswith("bn.weight") else v)
    replaced = _edited_checkpoint(
        tmp_path, "replaced.pth",
        lambda k, v: torch.rand_like(v) * 50 + 0.5 if k.endswith(("running_mean", "running_var")) else v)
    assert torch.allclose(_build(flipped, views, cams), reference, atol=1e-6, rtol=1e-5)
    assert torch.allclose(_build(replaced, views, cams), reference, atol=1e-6, rtol=1e-5)
    # The running statistics are a real alternative: with the twin's far-off ones the volume changes.
    running = _build(model, views, cams, statistics="running")
    assert (running - reference).abs().max() > 0.1 * reference.abs().max()
    assert not model.training  # the build restores the model's mode


def test_backends_agree_with_batch_statistics(twin_and_views):
    pytest.importorskip("spconv.pytorch")
    model, views, cams = twin_and_views
    dense, sparse = _build(model, views, cams, "dense"), _build(model, views, cams, "spconv")
    scale = dense.abs().max()
    assert (sparse - dense).abs().max() <= 1e-4 * scale


def test_unknown_statistics_is_a_clear_error(twin_and_views):
    model, views, cams = twin_and_views
    with pytest.raises(Exception, match="unknown normalisation statistics 'eval'"):
        _build(model, views, cams, statistics="eval")
