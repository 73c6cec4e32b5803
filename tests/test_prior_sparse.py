"""Sparse convolutions: torchsparse's rules checked by hand, spconv against the dense path, the kernel layout."""
import pytest
import torch

from geodream_pack.geodream_ops.prior.prior_checkpoint import torchsparse_to_spconv
from geodream_pack.geodream_ops.prior.sparse_conv import (SparseVolume, downsample_coords, downsample_shape, select_backend,
                                                     sparse_conv)
from geodream_pack.geodream_ops.prior.sparse_unet import SparseCostRegNet

from tests.twins_prior import torchsparse_kernel

HAS_SPCONV = select_backend() == "spconv"
needs_spconv = pytest.mark.skipif(not HAS_SPCONV, reason="spconv is not installed")


def _random_volume(n=11, channels=5, seed=0, margin=1):
    g = torch.Generator().manual_seed(seed)
    coords = (torch.rand(n, n, n, generator=g) < 0.4).nonzero()
    coords = coords[(coords >= margin).all(1)]  # an odd minimum exercises torchsparse's lower bound
    return SparseVolume(coords, torch.randn(len(coords), channels, generator=g), (n, n, n))


def test_downsample_sites_follow_torchsparse_by_hand():
    # Inputs at x = 1 and 3: the even sites within one voxel are x = 0, 2, 4, but 0 is below the inputs' minimum.
    coords = torch.tensor([[1, 2, 2], [3, 2, 2]])
    assert downsample_coords(coords).tolist() == [[1, 1, 1], [2, 1, 1]]
    assert downsample_shape((96, 96, 96)) == (49, 49, 49)


def test_torchsparse_kernel_offsets_land_where_torchsparse_puts_them():
    """torchsparse: out[p] = sum_k in[p + offset_k] @ kernel[k]; an impulse at q with only offset d set lands at q - d."""
    n, q, d = 7, torch.tensor([3, 3, 3]), torch.tensor([1, 0, -1])
    kernel = torch.zeros(27, 1, 1)
    kernel[9 * (d[2] + 1) + 3 * (d[1] + 1) + (d[0] + 1)] = 1.0
    coords = torch.stack(torch.meshgrid(*[torch.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    features = (coords == q).all(1).float().unsqueeze(1)
    out = sparse_conv(SparseVolume(coords, features, (n,) * 3), torchsparse_to_spconv(kernel), "subm", coords, "dense")
    assert coords[out[:, 0] != 0].tolist() == [(q - d).tolist()]
    # The twin writer's independent loop inverts the conversion.
    weight = torch.randn(4, 3, 3, 3, 2)
    assert torch.equal(torchsparse_to_spconv(torchsparse_kernel(weight)), weight)


@needs_spconv
@pytest.mark.parametrize("kind", ["subm", "down", "up"])
def test_spconv_and_dense_agree_on_each_convolution(kind):
    fine = _random_volume()
    coarse_coords = downsample_coords(fine.coords)
    weight = torch.randn(7, 3, 3, 3, 5, generator=torch.Generator().manual_seed(3))
    if kind == "up":
        x = SparseVolume(coarse_coords, torch.randn(len(coarse_coords), 5), downsample_shape(fine.shape))
        out_coords = fine.coords
    else:
        x, out_coords = fine, fine.coords if kind == "subm" else coarse_coords
    dense = sparse_conv(x, weight, kind, out_coords, "dense")
    ours = sparse_conv(x, weight, kind, out_coords, "spconv")
    assert dense.abs().max() > 1
    assert torch.allclose(ours, dense, atol=1e-5, rtol=1e-5)


@needs_spconv
def test_spconv_and_dense_agree_on_the_unet():
    torch.manual_seed(0)
    net = SparseCostRegNet(8, 4).eval()
    x = _random_volume(n=13, channels=8, seed=4, margin=0)
    dense, ours = net(x, "dense"), net(x, "spconv")
    assert dense.shape == (len(x.coords), 4) and dense.abs().max() > 0
    assert torch.allclose(ours, dense, atol=1e-5, rtol=1e-4)


@needs_spconv
def test_spconv_and_dense_agree_on_gradients():
    x = _random_volume(n=7, channels=3, seed=5)
    weight = torch.randn(2, 3, 3, 3, 3, requires_grad=True)
    grads = {}
    for backend in ("dense", "spconv"):
        weight.grad = None
        try:
            sparse_conv(x, weight, "subm", x.coords, backend).square().sum().backward()
        except Exception as err:  # spconv's CPU build has no backward kernels (it asks for a CUDA stream)
            if backend == "spconv" and not weight.is_cuda:
                pytest.skip(f"spconv cannot run backward on the CPU: {type(err).__name__}")
            raise
        grads[backend] = weight.grad.clone()
    assert torch.allclose(grads["spconv"], grads["dense"], atol=1e-4, rtol=1e-4)


def test_backend_choice():
    assert select_backend("dense") == "dense"
    with pytest.raises(ValueError, match="unknown sparse backend"):
        select_backend("cuda")
    if HAS_SPCONV:
        from spconv.cppconstants import CPU_ONLY_BUILD

        if CPU_ONLY_BUILD:  # a CPU-only build must not be picked for CUDA tensors
            assert select_backend(None, "cuda") == "dense"
            with pytest.raises(RuntimeError, match="CPU-only build"):
                select_backend("spconv", "cuda")


@needs_spconv
def test_spconv_runs_are_repeatable():
    """spconv 2.3.8's CPU kernels gave different results from run to run on several threads."""
    x = _random_volume(n=20, channels=16, seed=6, margin=0)
    weight = torch.randn(16, 3, 3, 3, 16)
    runs = [sparse_conv(x, weight, "subm", x.coords, "spconv") for _ in range(4)]
    assert all(torch.equal(r, runs[0]) for r in runs[1:])
