"""The written-out s(x), ds/dx of the refined field against autograd through CostVolume.sdf (grid_sample and f_g),
including the volume's gradient of a loss on both (NeuS's double backward)."""
import pytest
import torch

from geodream_pack.geodream_ops.prior import release_frame
from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
from geodream_pack.geodream_ops.refine.sdf_gradient import sdf_and_gradient


def _cost_volume(seed=0, size=(5, 6, 7), frame=None):
    torch.manual_seed(seed)
    decoder = GeometryDecoder(frame)
    with torch.no_grad():  # a trained-looking f_g: weight norms away from 1, some negative, biases of both signs
        for layer in (decoder.lin0, decoder.lin1, decoder.lin2):
            layer.weight_g.mul_(torch.empty_like(layer.weight_g).uniform_(-2.0, 3.0))
            layer.bias.normal_(0.0, 0.3)
    volume = torch.randn(1, 16, *size, dtype=torch.float64)
    box = release_frame.BBOX if frame is None else frame
    return CostVolume(volume, decoder.double().requires_grad_(False), box.double())


# The pose table's box, and a view set's own (Zero123's 31 views: larger, its centre lower) that f_g works in.
ZERO123_LIKE_BOX = torch.tensor([[-1.3943, -1.3943, -1.4450], [1.3943, 1.3943, 1.3436]])


@pytest.mark.parametrize("frame", [None, ZERO123_LIKE_BOX], ids=["pose-table box", "view-set box"])
def test_value_gradient_and_double_backward_match_autograd(frame):
    cv = _cost_volume(frame=frame)
    # Points all over the box and a little outside it (zero padding), plus exact grid vertices.
    points = release_frame.from_release(torch.rand(300, 3, dtype=torch.float64) * 2.2 - 1.1)
    weights = torch.randn(300, 3, dtype=torch.float64)

    volume = cv.volume.clone().requires_grad_(True)
    sdf, gradient = sdf_and_gradient(cv.decoder, volume, cv.bbox, points)
    loss = (sdf ** 2).sum() + (gradient * weights).sum() + gradient.norm(dim=-1).sum()
    (fast_volume_grad,) = torch.autograd.grad(loss, volume)

    volume_ref = cv.volume.clone().requires_grad_(True)
    x = points.clone().requires_grad_(True)
    sdf_ref, _ = cv.sdf(x, volume_ref)
    (gradient_ref,) = torch.autograd.grad(sdf_ref.sum(), x, create_graph=True)
    loss_ref = (sdf_ref ** 2).sum() + (gradient_ref * weights).sum() + gradient_ref.norm(dim=-1).sum()
    (ref_volume_grad,) = torch.autograd.grad(loss_ref, volume_ref)

    torch.testing.assert_close(sdf, sdf_ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(gradient, gradient_ref, atol=1e-9, rtol=1e-8)
    assert gradient.abs().max() > 1e-3 and ref_volume_grad.abs().max() > 1e-3
    torch.testing.assert_close(fast_volume_grad, ref_volume_grad, atol=1e-9, rtol=1e-8)


def _loss_and_volume_grad(fn, cv, points, weights):
    volume = cv.volume.clone().requires_grad_(True)
    sdf, gradient = fn(cv.decoder, volume, cv.bbox, points)
    loss = (sdf ** 2).sum() + (gradient * weights).sum()
    return (sdf, gradient) + torch.autograd.grad(loss, volume)


def test_compiled_graph_matches_eager():
    """The whole function captures as one graph (fullgraph: no break, so nothing falls back piecewise) whose
    forward and backward (AOTAutograd) give the eager numbers. The "aot_eager" backend runs that captured graph
    without inductor's C++ build, which takes minutes on CI's CPU; GEODREAM_TEST_INDUCTOR=1 adds inductor itself."""
    import os

    import pytest

    cv = _cost_volume(1)
    cv = CostVolume(cv.volume.float(), cv.decoder.float(), cv.bbox.float())
    points = release_frame.from_release(torch.rand(64, 3) * 2.2 - 1.1)
    weights = torch.randn(64, 3)
    eager = _loss_and_volume_grad(sdf_and_gradient, cv, points, weights)
    backends = ["aot_eager"] + (["inductor"] if os.environ.get("GEODREAM_TEST_INDUCTOR") == "1" else [])
    for backend in backends:
        torch._dynamo.reset()
        try:
            compiled = torch.compile(sdf_and_gradient, backend=backend, fullgraph=True, dynamic=True)
            out = _loss_and_volume_grad(compiled, cv, points, weights)
        except Exception as error:  # a torch without a working dynamo/inductor here: the eager path is what runs
            pytest.skip(f"torch.compile ({backend}) cannot run here: {type(error).__name__}: {error}")
        for a, b in zip(out, eager):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_evaluator_falls_back_to_eager_when_compiling_fails(monkeypatch, caplog):
    """GEODREAM_COMPILE=1 with a torch.compile that fails: one warning, then the eager numbers, and no more tries."""
    from geodream_pack.geodream_ops.refine import sdf_gradient

    cv = _cost_volume(2)
    points = release_frame.from_release(torch.rand(32, 3, dtype=torch.float64) * 2 - 1)
    attempts = []

    def broken(fn, **kwargs):
        def run(*args):
            attempts.append(1)
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setenv("GEODREAM_COMPILE", "1")
    monkeypatch.setattr(torch, "compile", broken)
    evaluator = sdf_gradient.Evaluator()
    with caplog.at_level("WARNING", logger="GeoDream"):
        first = evaluator(cv.decoder, cv.volume, cv.bbox, points)
        second = evaluator(cv.decoder, cv.volume, cv.bbox, points)
    expected = sdf_and_gradient(cv.decoder, cv.volume, cv.bbox, points)
    assert len(attempts) == 1 and "no C++ compiler" in caplog.text
    for out in (first, second):
        for a, b in zip(out, expected):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_clamped_softplus_is_the_release_softplus():
    """geometry_decoder.softplus (input floored at beta h = -40, no denormals) against torch's softplus(beta=100),
    the release's formulation, in float64: values and slopes within 1e-6 everywhere, identical above the floor;
    with and without autograd (whose floor keeps no copy of the input), and floored in place for a fresh input."""
    import torch.nn.functional as F

    from geodream_pack.geodream_ops.prior.geometry_decoder import SOFTPLUS_FLOOR, softplus

    h = torch.cat([torch.linspace(-5.0, 5.0, 20001, dtype=torch.float64), torch.tensor([SOFTPLUS_FLOOR, 0.2, -0.4001,
                   0.2001, 0.1999], dtype=torch.float64)]).requires_grad_(True)
    ours, release = softplus(h), F.softplus(h, beta=100.0)
    torch.testing.assert_close(ours, release, atol=1e-6, rtol=0)
    above = h > SOFTPLUS_FLOOR
    assert torch.equal(ours[above], release[above])
    slope, = torch.autograd.grad(ours.sum(), h)
    release_slope, = torch.autograd.grad(release.sum(), h)
    torch.testing.assert_close(slope, release_slope, atol=1e-6, rtol=0)
    with torch.no_grad():
        assert torch.equal(softplus(h), ours)
    plain, fresh = h.detach(), h.detach().clone()
    torch.testing.assert_close(softplus(plain), release.detach(), atol=1e-6, rtol=0)
    assert torch.equal(softplus(fresh, fresh=True), softplus(plain))
    assert torch.equal(fresh, plain.clamp_min(SOFTPLUS_FLOOR))
    assert float(release[~above].detach().max()) < 5e-20 and float(ours[~above].detach().max()) < 5e-20


def test_channels_last_volume_gives_the_same_numbers_and_its_own_gradient_layout():
    """NeuSField keeps V channels-last: the table is then a view, the numbers are those of a contiguous V, and the
    gradient comes back in the channels-last layout (no copy into the parameter's strides)."""
    cv = _cost_volume(3, size=(6, 5, 7))
    points = release_frame.from_release(torch.rand(200, 3, dtype=torch.float64) * 2.2 - 1.1)
    grads, outs = [], []
    for volume in (cv.volume.clone(), cv.volume.contiguous(memory_format=torch.channels_last_3d)):
        volume.requires_grad_(True)
        sdf, gradient = sdf_and_gradient(cv.decoder, volume, cv.bbox, points)
        ((sdf ** 2).sum() + gradient.norm(dim=-1).sum()).backward()
        outs.append((sdf, gradient))
        grads.append(volume.grad)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=1e-12)
    assert grads[1].is_contiguous(memory_format=torch.channels_last_3d) and grads[1].abs().max() > 1e-3


def test_sdf_alone_is_the_first_output_of_the_decoder():
    """f_g's SDF row alone (Prior To Mesh, the field's SDF queries) equals the full last layer's first output."""
    cv = _cost_volume(4)
    points = release_frame.from_release(torch.rand(100, 3, dtype=torch.float64) * 2.2 - 1.1)
    full, _ = cv.sdf(points)
    torch.testing.assert_close(cv.sdf_values(points), full, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(cv.decoder.sdf(points, cv.interpolate(points)), full, atol=1e-12, rtol=1e-12)
