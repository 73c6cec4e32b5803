"""The prior's normalisation follows the view set, as the release's data loader recomputes it for every set
(One2345_eval_new_data.py cal_scale_mat + data/scene.py get_boundingbox, factor 1.1): written out here from the
release's own poses (pose.json for the text path, get_poses for Zero123) and checked against ours from our cameras;
then carried by the cost volume into f_g, the written-out gradient, refinement's unit and saved files."""
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from geodream_pack.geodream_ops import cameras as C
from geodream_pack.geodream_ops.multiview import view_recipe as V
from geodream_pack.geodream_ops.multiview import zero123_recipe
from geodream_pack.geodream_ops.prior import release_frame as R
from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
from geodream_pack.geodream_ops.prior.model import PriorModel, build_cost_volume
from geodream_pack.geodream_ops.refine.neus_field import NeuSField
from geodream_pack.geodream_ops.refine.sdf_gradient import sdf_and_gradient

from tests.test_view_recipe import RELEASE_C2W, _recipe_cameras
from tests.test_zero123 import _release_poses

BLENDER2OPENCV = np.diag([1.0, -1, -1, 1])
POSE_K = np.array([[280.0, 0, 128], [0, 280.0, 128], [0, 0, 1]])  # pose.json / gen_poses intrinsics
NEAR_FAR = (1.2 - 0.7, 1.2 + 0.6)  # gen_poses


def _release_scale_mat(c2ws_blender):
    """One2345_eval_new_data.__getitem__ + cal_scale_mat + get_boundingbox, written out in numpy: extrinsics
    relative to view 0 (w2c @ inv(w2c_ref)), every view's frustum at pose.json's near/far through pixel corners
    0 and 256, the box of all corners, radius = half its longest side x 1.1. Returns (radius, centre) in camera 0's
    OpenCV frame."""
    c2ws = [np.vstack([c, [0, 0, 0, 1]]) @ BLENDER2OPENCV for c in c2ws_blender]
    w2c_ref_inv = c2ws[0]
    corners = []
    for c2w in c2ws:
        w2c = np.linalg.inv(c2w) @ w2c_ref_inv
        rel_c2w = np.linalg.inv(w2c)
        for depth in NEAR_FAR:
            for u in (0, 256):
                for v in (0, 256):
                    cam = np.array([(u - POSE_K[0, 2]) * depth / POSE_K[0, 0],
                                    (v - POSE_K[1, 2]) * depth / POSE_K[1, 1], depth, 1.0])
                    corners.append((rel_c2w @ cam)[:3])
    corners = np.array(corners)
    low, high = corners.min(0), corners.max(0)
    return (high - low).max() / 2 * 1.1, (low + high) / 2


def _as_our_box(radius, centre, camera0: C.Cameras):
    """The release's box (camera-0 OpenCV frame) in our world: through our camera 0 turned to OpenCV axes."""
    c2w_cv = camera0.c2w[0].double() @ torch.diag(torch.tensor([1.0, -1, -1, 1], dtype=torch.float64))
    ours = c2w_cv[:3, :3] @ torch.as_tensor(centre) + c2w_cv[:3, 3]
    return torch.stack([ours - radius, ours + radius])


def _text_release():
    table = [RELEASE_C2W[12]] + list(RELEASE_C2W.values())  # view 0 (the query) is view 12's pose
    return _release_scale_mat(np.array(table))


def _zero123_release():
    _, poses = _release_poses(90.0)
    return _release_scale_mat(poses[list(zero123_recipe.PRIOR_VIEWS)])


def test_text_path_box_is_the_release_scale_mat_and_unchanged():
    radius, centre = _text_release()
    # RELEASE_C2W keeps pose.json to 4 decimals (0.866 for sqrt(3)/2), hence 5e-5.
    assert radius == pytest.approx(R.SCALE, abs=5e-5)
    np.testing.assert_allclose(centre, [0.0, R.Y_SHIFT, 1.2], atol=5e-5)
    ours = _recipe_cameras()
    box = R.view_set_box(ours)
    torch.testing.assert_close(box.double(), _as_our_box(radius, centre, ours[[0]]), atol=5e-5, rtol=0)
    torch.testing.assert_close(box, R.BBOX, atol=1e-6, rtol=0)  # the text path's numbers stay the table's


def test_zero123_box_is_the_release_scale_mat_of_its_31_views():
    radius, centre = _zero123_release()
    assert radius == pytest.approx(1.3943, abs=1e-4)
    np.testing.assert_allclose(centre, [0.0, 0.0507, 1.2], atol=1e-4)
    ours = zero123_recipe.recipe_cameras()[list(zero123_recipe.PRIOR_VIEWS)]
    box = R.view_set_box(ours)
    torch.testing.assert_close(box.double(), _as_our_box(radius, centre, ours[[0]]), atol=1e-5, rtol=0)
    # The release builds the volume from the 30 stage-2 images (0.png is its query view); without 0.png's camera
    # the box is the same.
    torch.testing.assert_close(R.view_set_box(ours[list(range(1, len(ours)))]), box)
    # The gap the fixed table box left: 4.1 % larger, centred 0.034 lower.
    assert float(R.box_scale(box)) / R.SCALE - 1 == pytest.approx(0.041, abs=1e-3)
    assert float(R.box_centre(R.BBOX)[2] - R.box_centre(box)[2]) == pytest.approx(0.0337, abs=1e-3)


def test_users_cameras_get_their_frusta_box_near_far_following_the_distance():
    """A user's rig: the same rule, near/far = distance - 0.7 / + 0.6 (gen_poses' rule at radius 1.2); so a rig
    twice as far gives the box of its frusta, checked against the corners computed the slow way."""
    rig = C.Cameras.from_spherical([0.0, 20.0, -10.0], [0.0, 130.0, 250.0], 2.4, 40.0)
    corners = []
    for k in range(len(rig)):
        f = float(C.focal_from_fovy(rig.fovy_deg[k], 256))
        d = float(rig.distance[k])
        for depth in (d - 0.7, d + 0.6):
            for u in (0, 256):
                for v in (0, 256):
                    gl = torch.tensor([(u - 128) * depth / f, -(v - 128) * depth / f, -depth])
                    corners.append(rig.c2w[k, :3, :3] @ gl + rig.c2w[k, :3, 3])
    corners = torch.stack(corners)  # our frame; the release's reference axes are a signed permutation of ours
    low, high = corners.min(0).values, corners.max(0).values
    radius = float((high - low).max()) / 2 * 1.1
    box = R.view_set_box(rig)
    torch.testing.assert_close(R.box_centre(box), (low + high) / 2, atol=1e-4, rtol=0)
    assert float(R.box_scale(box)) == pytest.approx(radius, abs=1e-4)


def test_frame_conversion_follows_the_box():
    box = R.view_set_box(zero123_recipe.recipe_cameras()[list(zero123_recipe.PRIOR_VIEWS)])
    s, c = float(R.box_scale(box)), R.box_centre(box)
    release = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.2, -0.3, 0.4]])
    # ours = s * (-z_r, x_r, -y_r) + c
    expected = s * torch.stack([-release[:, 2], release[:, 0], -release[:, 1]], -1) + c
    torch.testing.assert_close(R.from_release(release, box), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(R.to_release(expected, box), release, atol=1e-6, rtol=0)
    torch.testing.assert_close(R.from_release(R.to_release(c[None], box), box), c[None])


def _zero123_volume():
    torch.manual_seed(0)
    model = PriorModel()
    cameras = zero123_recipe.recipe_cameras()[list(zero123_recipe.PRIOR_VIEWS)]
    views = torch.rand(len(cameras), 32, 32, 3)
    return model, cameras, build_cost_volume(model, views, cameras, resolution=8, grid_size=8, image_size=32,
                                             backend="dense")


def test_built_volume_carries_its_box_into_f_g_and_its_sharpness():
    model, cameras, volume = _zero123_volume()
    box = R.view_set_box(cameras)
    torch.testing.assert_close(volume.bbox, box)
    torch.testing.assert_close(volume.decoder.frame, box)
    torch.testing.assert_close(model.decoder.frame, R.BBOX)  # the prior's own decoder is untouched
    s, c = float(R.box_scale(box)), R.box_centre(box)
    points, latent = torch.rand(20, 3) - 0.5, torch.randn(20, 16)
    sdf, feature = volume.decoder(points, latent)
    # Written out: u = (x - c) / s in the release's axes (x_r = y, y_r = -z, z_r = -x), SDF in our unit (x s).
    u = torch.stack([(points[:, 1] - c[1]) / s, -(points[:, 2] - c[2]) / s, -(points[:, 0] - c[0]) / s], -1)
    expected = model.decoder.forward_release(u, latent)
    torch.testing.assert_close(sdf, expected[:, 0] * s, atol=1e-5, rtol=0)
    torch.testing.assert_close(feature, expected[:, 1:], atol=1e-5, rtol=0)
    assert volume.inv_s == pytest.approx(math.exp(10 * float(model.variance_network_lod0.variance)) / s)


def test_written_out_gradient_works_in_the_decoders_box():
    _, _, volume = _zero123_volume()
    decoder = volume.decoder.double()
    cv = CostVolume(volume.volume.double(), decoder, volume.bbox.double())
    points = R.from_release(torch.rand(100, 3, dtype=torch.float64) * 2 - 1, cv.bbox)
    sdf, gradient = sdf_and_gradient(decoder, cv.volume, cv.bbox, points)
    x = points.clone().requires_grad_(True)
    sdf_ref, _ = cv.sdf(x)
    (gradient_ref,) = torch.autograd.grad(sdf_ref.sum(), x)
    torch.testing.assert_close(sdf, sdf_ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(gradient, gradient_ref, atol=1e-9, rtol=1e-7)


def test_refinement_reads_the_volumes_box_and_saved_files_keep_theirs(tmp_path):
    _, _, volume = _zero123_volume()
    field = NeuSField(volume)
    assert C.scene_unit(field.bbox) == pytest.approx(float(R.box_scale(volume.bbox)))
    torch.testing.assert_close(field.decoder.frame, volume.bbox)
    volume.save(tmp_path / "cv.safetensors")
    loaded = CostVolume.load(tmp_path / "cv.safetensors")
    torch.testing.assert_close(loaded.decoder.frame, volume.bbox)
    points = torch.rand(16, 3) - 0.5
    torch.testing.assert_close(loaded.sdf(points)[0], volume.sdf(points)[0])
    field.save(tmp_path / "field")
    refield = NeuSField.load(tmp_path / "field", loaded)
    torch.testing.assert_close(refield.decoder.frame, volume.bbox)
    torch.testing.assert_close(refield.cost_volume.sdf(points)[0], field.cost_volume.sdf(points)[0])


def test_a_cost_volume_saved_before_boxes_followed_the_views_loads_in_the_table_box(tmp_path):
    """Files written before this change have no ``frame``: every volume then had the pose table's box."""
    old = CostVolume(torch.randn(1, 16, 4, 4, 4), GeometryDecoder().requires_grad_(False), R.BBOX.clone())
    path = tmp_path / "old.safetensors"
    old.save(path)
    tensors = load_file(str(path))
    del tensors["frame"]
    save_file(tensors, str(path), metadata={"format": "geodream-cost-volume/1"})
    loaded = CostVolume.load(path)
    torch.testing.assert_close(loaded.decoder.frame, R.BBOX)
    points = torch.rand(16, 3) - 0.5
    torch.testing.assert_close(loaded.sdf(points)[0], old.sdf(points)[0])


def test_sparse_rigs_keep_the_pose_tables_box_unless_switched_to_the_release_rule(monkeypatch):
    """Four views 90 degrees apart at the release's distance and focal bound a box a third smaller than the table's;
    such a set is built in the table's box (FLOOR_AT_POSE_TABLE), the release's rule only with the switch off. The
    release's own sets are untouched: the text path's is the table's, Zero123's larger one is its own."""
    fovy = math.degrees(2 * math.atan(128 / 280))
    sparse = C.Cameras.from_spherical([15.0] * 4, [0.0, 90.0, 180.0, 270.0], 1.2, fovy)
    own = R.view_set_box(sparse)
    assert float(R.box_scale(own)) < 0.8 * float(R.box_scale(R.BBOX))
    torch.testing.assert_close(R.prior_box(sparse), R.BBOX)
    zero123 = zero123_recipe.recipe_cameras()[list(zero123_recipe.PRIOR_VIEWS)]
    torch.testing.assert_close(R.prior_box(zero123), R.view_set_box(zero123))
    monkeypatch.setattr(R, "FLOOR_AT_POSE_TABLE", False)
    torch.testing.assert_close(R.prior_box(sparse), own)
