"""The release's 14-view text recipe: MVDream's 4 views + 10 Zero123++ v1.1 tiles at the poses of its pose table,
converted to our frame, checked against that table's matrices and by projecting known points both ways."""
import os

import pytest
import torch

from geodream_pack.geodream_ops import cameras as C
from geodream_pack.geodream_ops.multiview import view_recipe as V
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.nodes.multiview import GeoDreamExpandViews, GeoDreamLoadZero123Plus
from geodream_pack.nodes.prior import GeoDreamBuildCostVolume

from tests import twins_multiview as tw
from tests.twins_prior import random_prior

# One-2-3-45/exp/pose.json of GeoDream's release (Blender c2w, rows 0-2), the views its volume is built from, in
# the order One2345_eval_new_data.py reads them: 12, 19, 20, 22, 23, 24, 25, 26, 32, 33, 34, 35, 36, 39.
RELEASE_C2W = {
    12: [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -1.2], [0.0, 1.0, 0.0, 0.0]],
    19: [[0.0, 0.0, 1.0, 1.2], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
    20: [[-0.5, -0.433, 0.75, 0.9], [0.866, -0.25, 0.433, 0.5196], [0.0, 0.866, 0.5, 0.6]],
    22: [[-0.5, 0.433, -0.75, -0.9], [-0.866, -0.25, 0.433, 0.5196], [0.0, 0.866, 0.5, 0.6]],
    23: [[0.5, -0.2962, -0.8138, -0.9766], [-0.866, -0.171, -0.4698, -0.5638], [0.0, 0.9397, -0.342, -0.4104]],
    24: [[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, -0.866, -1.0392], [0.0, 0.866, 0.5, 0.6]],
    25: [[0.5, 0.2962, 0.8138, 0.9766], [0.866, -0.171, -0.4698, -0.5638], [0.0, 0.9397, -0.342, -0.4104]],
    26: [[-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.2], [0.0, 1.0, 0.0, 0.0]],
    32: [[-0.866, 0.171, 0.4698, 0.5638], [0.5, 0.2962, 0.8138, 0.9766], [0.0, 0.9397, -0.342, -0.4104]],
    33: [[0.0, 0.0, -1.0, -1.2], [-1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
    34: [[0.5, 0.433, -0.75, -0.9], [-0.866, 0.25, -0.433, -0.5196], [0.0, 0.866, 0.5, 0.6]],
    35: [[1.0, 0.0, 0.0, 0.0], [0.0, -0.342, -0.9397, -1.1276], [0.0, 0.9397, -0.342, -0.4104]],
    36: [[0.5, -0.433, 0.75, 0.9], [0.866, 0.25, -0.433, -0.5196], [0.0, 0.866, 0.5, 0.6]],
    39: [[-0.5, -0.2962, -0.8138, -0.9766], [-0.866, 0.171, 0.4698, 0.5638], [0.0, 0.9397, -0.342, -0.4104]],
}
RELEASE_K = torch.tensor([[280.0, 0, 128], [0, 280, 128], [0, 0, 1]])  # pose.json intrinsics, 256 x 256
TABLE_TO_OURS = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])  # +90 degrees about Z


def _release_c2w():
    c2w = torch.zeros(len(RELEASE_C2W), 4, 4)
    c2w[:, :3] = torch.tensor(list(RELEASE_C2W.values()))
    c2w[:, 3, 3] = 1
    return c2w


def _recipe_cameras(source_cameras=V.SOURCE_CAMERAS[0]):
    source = C.mvdream_rig(15.0)
    if source_cameras == V.SOURCE_CAMERAS[0]:
        source = V.release_source_cameras(source)
    return V.expanded_cameras(source, V.tile_selection(V.RECIPES[0], 4), "v1.1")


def test_recipe_cameras_are_the_release_pose_table_in_our_frame():
    ours = _recipe_cameras()
    assert len(ours) == 14
    expected = _release_c2w()
    expected[:, :3, :] = TABLE_TO_OURS @ expected[:, :3, :]
    assert torch.allclose(ours.c2w, expected, atol=2e-4)
    assert torch.allclose(C.focal_from_fovy(ours.fovy_deg, 256), torch.full((14,), 280.0), atol=1e-3)


def test_known_points_project_to_the_same_pixels_as_in_the_release():
    """The release's projection (OpenCV: c2w @ diag(1, -1, -1, 1), K of pose.json) of points in its table's world
    against ours of the same points turned into our frame."""
    points = torch.tensor([[0.0, 0, 0], [0.3, -0.2, 0.1], [-0.25, 0.3, -0.2], [0.1, 0.35, 0.3], [-0.3, -0.3, 0.25]])
    c2w_cv = _release_c2w() @ torch.diag(torch.tensor([1.0, -1, -1, 1]))
    w2c = torch.linalg.inv(c2w_cv)
    cam = torch.einsum("nij,pj->npi", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    uvw = cam @ RELEASE_K.t()
    release_pixels = uvw[..., :2] / uvw[..., 2:]
    ours, depth = _recipe_cameras().project(points @ TABLE_TO_OURS.t(), 256, 256)
    assert (depth > 0).all()
    assert torch.allclose(ours, release_pixels, atol=0.05)
    assert release_pixels.std() > 10  # the points spread over the images


def test_as_given_keeps_the_source_cameras_and_tiles_follow_their_azimuth():
    given = _recipe_cameras(V.SOURCE_CAMERAS[1])
    source = C.mvdream_rig(15.0)
    assert torch.allclose(given.c2w[[0, 1, 7, 9]], source.c2w, atol=1e-6)
    # The left view's first tile: 30 degrees further round, at Zero123++ v1.1's absolute 30 degree elevation.
    assert given.azimuth_deg[2] == pytest.approx(120.0, abs=1e-3)
    assert given.elevation_deg[2] == pytest.approx(30.0, abs=1e-3)


def test_recipe_needs_mvdreams_four_views():
    with pytest.raises(GeoDreamError, match="got 3"):
        V.tile_selection(V.RECIPES[0], 3)
    assert V.tile_selection(V.RECIPES[1], 2) == (V.ALL_TILES, V.ALL_TILES)
    assert sum(len(t) for t in V.RELEASE_TILES) == 10


def test_expand_node_builds_the_14_views_and_the_prior_takes_them(pack_dirs, tmp_path):
    folder = tw.write_zero123plus(tmp_path / "zero123plus-v1.1")
    (pack_dirs["models"] / "diffusers").mkdir()
    os.symlink(folder, pack_dirs["models"] / "diffusers" / "zero123plus-v1.1")
    model = GeoDreamLoadZero123Plus().load("zero123plus-v1.1", "auto")[0]
    assert model.version == "v1.1"
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    ball = (xx**2 + yy**2 < 0.4)[..., None]
    views = torch.where(ball, torch.tensor([0.8, 0.2, 0.1]), torch.ones(3)).expand(4, 32, 32, 3).clone()
    node = GeoDreamExpandViews()
    out, cams, masks = node.expand(model, views, C.mvdream_rig(15.0), V.RECIPES[0], V.SOURCE_CAMERAS[0], 1, 0.0, 5,
                                   matting="flat background")
    assert out.shape == (14, 256, 256, 3) and masks.shape == (14, 256, 256) and len(cams) == 14
    assert torch.allclose(cams.c2w, _recipe_cameras().c2w, atol=1e-5)
    # The MVDream views pass through (resized to the release's 256 px), their object kept, background white.
    assert float(masks[0].mean()) == pytest.approx(1 - float(ball.float().mean()), abs=0.05)
    again = node.expand(model, views, C.mvdream_rig(15.0), V.RECIPES[0], V.SOURCE_CAMERAS[0], 1, 0.0, 5,
                        matting="flat background")[0]
    assert torch.equal(out, again)
    volume = GeoDreamBuildCostVolume().build(random_prior(), out, cams, 12, 12, "dense", masks)[0]
    assert torch.isfinite(volume.volume).all() and volume.volume.abs().max() > 0
    with pytest.raises(GeoDreamError, match="runs Zero123\\+\\+"):
        node.expand(type("M", (), {"kind": "mvdream"})(), views, C.mvdream_rig(), V.RECIPES[0],
                    V.SOURCE_CAMERAS[0], 1, 0.0, 5)


def test_expand_node_with_u2net_runs_the_releases_two_passes_on_each_grid(pack_dirs, tmp_path):
    """With rembg, each Zero123++ grid gets the release's first pass whole (img_to_6mv.py) before its chosen tiles
    meet the second pass with the MVDream views (rank_and_resize.py)."""
    from geodream_pack.geodream_ops.multiview import matting
    from geodream_pack.geodream_ops.multiview.object_preprocess import object_on_grey, resize_square
    from tests.twins_rembg import write_u2net

    folder = tw.write_zero123plus(tmp_path / "zero123plus-v1.1")
    (pack_dirs["models"] / "diffusers").mkdir()
    os.symlink(folder, pack_dirs["models"] / "diffusers" / "zero123plus-v1.1")
    u2net = write_u2net(pack_dirs["models"] / "rembg" / "u2net.onnx")
    model = GeoDreamLoadZero123Plus().load("zero123plus-v1.1", "auto")[0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    views = torch.where((xx**2 + yy**2 < 0.4)[..., None], torch.tensor([0.8, 0.2, 0.7]), torch.ones(3))
    views = views.expand(2, 32, 32, 3).clone()
    out = GeoDreamExpandViews().expand(model, views, C.mvdream_rig(15.0)[:2], V.RECIPES[1], V.SOURCE_CAMERAS[1], 1, 0.0,
                                       5, matting="rembg")[0]
    # the second source view's tiles (all 6 per view: view, 6 tiles, view, 6 tiles), seed + 1, the default CFG 4
    grid = model.generate(resize_square(object_on_grey(views[1]), model.tile_size), 1, 4.0, 5 + 1)
    first = matting.zero123plus_first_pass(grid, u2net, 256)
    expected = matting.matte_views(first, "rembg", u2net)[0]
    torch.testing.assert_close(out[8:14], expected, atol=1e-6, rtol=0)
