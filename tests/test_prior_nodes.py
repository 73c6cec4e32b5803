"""End to end on a tiny twin through the real nodes: load -> build -> SDF -> mesh; save/load; the release import."""
import pytest
import torch

from geodream_pack.geodream_ops import cameras as C
from geodream_pack.geodream_ops.multiview import zero123_recipe
from geodream_pack.geodream_ops.prior import release_frame as R
from geodream_pack.geodream_ops.prior.marching_cubes import sdf_grid
from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
from geodream_pack.nodes.prior import (GeoDreamBuildCostVolume, GeoDreamLoadCostVolume, GeoDreamLoadPrior,
                                       GeoDreamPriorToMesh, GeoDreamSaveCostVolume)

from tests.twins_prior import write_prior_checkpoint

GRID, RESOLUTION = 16, 20


@pytest.fixture
def prior(pack_dirs):
    write_prior_checkpoint(pack_dirs["models"] / "geodream")
    assert "ckpt_215000.pth" in GeoDreamLoadPrior.INPUT_TYPES()["required"]["ckpt_name"][0]
    return GeoDreamLoadPrior().load("ckpt_215000.pth")[0]


def _views(n=4, size=32):
    """A grey ball on white, the same from every side."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ball = (xx**2 + yy**2 < 0.4).float()[..., None]
    return (1 - 0.6 * ball).expand(n, size, size, 3).clone()


def _build(prior, backend="dense"):
    return GeoDreamBuildCostVolume().build(prior, _views(), C.mvdream_rig(), RESOLUTION, GRID, backend)[0]


def test_views_to_cost_volume_to_sdf_to_mesh(prior):
    volume = _build(prior)
    assert volume.volume.shape == (1, 16, RESOLUTION, RESOLUTION, RESOLUTION)
    assert torch.allclose(volume.bbox, R.prior_box(C.mvdream_rig()))  # 4 views: the pose table's box (prior_box)
    assert volume.volume.abs().sum() > 0 and torch.isfinite(volume.volume).all()
    sdf, feature = volume.sdf(torch.rand(64, 3) - 0.5)
    assert sdf.shape == (64,) and feature.shape == (64, 127)
    # Random weights give no particular shape: mesh the level half-way through the SDF's range.
    grid = sdf_grid(volume, 24)
    threshold = float(grid.median())
    mesh = GeoDreamPriorToMesh().mesh(volume, 24, threshold)[0]
    assert isinstance(mesh, TexturedMesh) and len(mesh.faces) > 0
    lo, hi = volume.bbox
    assert ((mesh.vertices >= lo - 1e-4) & (mesh.vertices <= hi + 1e-4)).all()
    # Vertices lie on the level set, up to marching cubes' linear interpolation between grid points.
    at_vertices = volume.sdf(mesh.vertices)[0]
    assert (at_vertices - threshold).abs().median() < 0.1 * (grid.max() - grid.min())


def test_backends_build_the_same_volume(prior):
    pytest.importorskip("spconv.pytorch")
    dense, sparse = _build(prior, "dense"), _build(prior, "spconv")
    assert torch.allclose(sparse.volume, dense.volume, atol=1e-5, rtol=1e-4)


def test_bad_inputs_are_explained(prior):
    node = GeoDreamBuildCostVolume()
    with pytest.raises(ValueError, match="one camera per view"):
        node.build(prior, _views(3), C.mvdream_rig(), RESOLUTION, GRID, "dense")
    with pytest.raises(ValueError, match="at least 2 views"):
        node.build(prior, _views(1), C.mvdream_rig()[[0]], RESOLUTION, GRID, "dense")
    with pytest.raises(FileNotFoundError, match="models/geodream"):
        GeoDreamLoadPrior().load("missing.pth")


def test_save_and_load_round_trip(prior, pack_dirs):
    volume = _build(prior)
    out = GeoDreamSaveCostVolume().save(volume, "GeoDream/cv")
    path = out["result"][0]
    assert path.endswith(".safetensors") and out["ui"]["files"][0]["subfolder"] == "GeoDream"
    loaded = GeoDreamLoadCostVolume().load(path)[0]
    assert torch.equal(loaded.volume, volume.volume) and torch.equal(loaded.bbox, volume.bbox)
    points = torch.rand(32, 3) - 0.5
    assert torch.allclose(loaded.sdf(points)[0], volume.sdf(points)[0])
    assert not any(p.requires_grad for p in loaded.decoder.parameters())


def test_release_volume_imports_into_our_frame(prior, pack_dirs):
    """con_volume_lod_150.pth as GeoDream's release saves it: sampled by the release at its points, or by us at ours."""
    release = torch.randn(1, 16, 9, 10, 11)
    torch.save(release, pack_dirs["output"] / "con_volume_lod_150.pth")
    with pytest.raises(ValueError, match="connect GeoDreamLoadPrior"):
        GeoDreamLoadCostVolume().load("con_volume_lod_150.pth")
    volume = GeoDreamLoadCostVolume().load("con_volume_lod_150.pth", prior)[0]
    points = torch.rand(40, 3) * 1.6 - 0.8  # release frame
    latent = torch.nn.functional.grid_sample(release, points.flip(-1).view(1, 1, 1, -1, 3), align_corners=True)
    expected = prior.decoder.forward_release(points, latent.view(16, -1).t())
    sdf, feature = volume.sdf(R.from_release(points))
    assert torch.allclose(sdf, expected[:, 0] * R.SCALE, atol=1e-5) and torch.allclose(feature, expected[:, 1:], atol=1e-5)
    # A volume of the release's Zero123 path: the box of the cameras connected, the same points of its frame.
    cameras = zero123_recipe.recipe_cameras()[list(zero123_recipe.PRIOR_VIEWS)]
    volume = GeoDreamLoadCostVolume().load("con_volume_lod_150.pth", prior, cameras)[0]
    box = R.view_set_box(cameras)
    assert torch.allclose(volume.bbox, box) and R.box_scale(box) > R.SCALE + 0.05
    sdf, feature = volume.sdf(R.from_release(points, box))
    assert torch.allclose(sdf, expected[:, 0] * R.box_scale(box), atol=1e-5)
    assert torch.allclose(feature, expected[:, 1:], atol=1e-5)


def test_interrupt_stops_the_build(prior):
    from geodream_pack.nodes import host

    host.request_interrupt()
    with pytest.raises(host.Interrupted):
        _build(prior)


def test_cost_volume_carries_the_priors_sharpness(prior, pack_dirs):
    """NeuS's deviation from the checkpoint reaches the refinement in our length unit, and survives save/load."""
    import math

    from geodream_pack.geodream_ops.refine.neus_field import NeuSField

    volume = _build(prior)
    variance = float(prior.variance_network_lod0.variance)
    assert volume.inv_s == pytest.approx(math.exp(10 * variance) / float(R.box_scale(volume.bbox)))
    path = GeoDreamSaveCostVolume().save(volume, "GeoDream/cv")["result"][0]
    loaded = GeoDreamLoadCostVolume().load(path)[0]
    assert loaded.inv_s == pytest.approx(volume.inv_s)
    assert float(NeuSField(loaded).inv_s) == pytest.approx(volume.inv_s, rel=1e-5)
