"""Camera convention: checked against hand-computed projections, the published rig tables and sampler ranges."""
import math

import pytest
import torch

from geodream_pack.geodream_ops import cameras as C


def test_azimuth_zero_sits_on_plus_x_and_looks_at_origin():
    cam = C.Cameras.from_spherical(0.0, 0.0, 2.0, 60.0)
    assert torch.allclose(cam.position, torch.tensor([[2.0, 0.0, 0.0]]), atol=1e-6)
    # OpenGL camera: looks along -Z of its own frame, i.e. -X of the world here; +Y of the camera is world up.
    assert torch.allclose(cam.c2w[0, :3, 2], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(cam.c2w[0, :3, 1], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6)
    assert torch.allclose(cam.c2w[0, :3, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_projection_of_known_points_by_hand():
    H, W, fovy, d = 256, 320, 60.0, 2.0
    cam = C.Cameras.from_spherical(0.0, 0.0, d, fovy)
    f = 0.5 * H / math.tan(math.radians(fovy) / 2)
    # A camera on +X looking along -X has world +Y on its right and world +Z up; the origin lands on the centre.
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5], [0.5, 0.2, -0.3]])
    uv, depth = cam.project(points, H, W)
    expected = []
    for x, y, z in points.tolist():
        dist = d - x
        expected.append((W / 2 + f * y / dist, H / 2 - f * z / dist))
    assert torch.allclose(uv[0], torch.tensor(expected), atol=1e-3)
    assert torch.allclose(depth[0], d - points[:, 0], atol=1e-6)


def test_projection_matches_rays():
    """A point along a pixel's ray projects back onto that pixel's centre, for arbitrary cameras."""
    cams = C.Cameras.from_spherical([20.0, -35.0, 80.0], [10.0, 200.0, 290.0], [1.5, 2.5, 3.0], [40.0, 49.1, 70.0])
    H, W = 24, 32
    origins, dirs = cams.rays(H, W)
    pts = origins + 1.3 * dirs  # [N, H, W, 3]
    uv, depth = cams.project(pts.reshape(3, -1, 3), H, W)
    jj, ii = torch.meshgrid(torch.arange(W) + 0.5, torch.arange(H) + 0.5, indexing="xy")
    centres = torch.stack([jj, ii], -1).reshape(1, -1, 2).expand(3, -1, -1)
    assert torch.allclose(uv, centres, atol=1e-3)
    assert (depth > 0).all()


def test_centre_ray_points_at_origin():
    cams = C.Cameras.from_spherical([20.0, -10.0], [30.0, 250.0], [1.2, 4.0], [30.0, 50.0])
    origins, dirs = cams.rays(64, 64)
    # Between the four central pixels the ray is exactly the optical axis; the mean of the four is that axis.
    centre = dirs[:, 31:33, 31:33].mean(dim=(1, 2))
    to_origin = torch.nn.functional.normalize(-cams.position, dim=-1)
    assert torch.allclose(torch.nn.functional.normalize(centre, dim=-1), to_origin, atol=1e-6)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(2, 64, 64), atol=1e-5)


def test_spherical_round_trip_and_intrinsics():
    cams = C.Cameras.from_spherical([20.0, -10.0, 45.0], [30.0, 150.0, 330.0], 2.0, 30.0)
    assert torch.allclose(cams.elevation_deg, torch.tensor([20.0, -10.0, 45.0]), atol=1e-4)
    assert torch.allclose(cams.azimuth_deg, torch.tensor([30.0, 150.0, 330.0]), atol=1e-4)
    K = cams.intrinsics(320, 320)
    assert torch.allclose(K[0, 0, 0], torch.tensor(160 / math.tan(math.radians(15))), atol=1e-3)
    assert K[0, 0, 2] == 160 and K[0, 1, 2] == 160


def test_zero123plus_rigs_match_published_tables():
    v12 = C.zero123plus_rig("v1.2")
    assert torch.allclose(v12.azimuth_deg, torch.tensor([30.0, 90, 150, 210, 270, 330]), atol=1e-4)
    assert torch.allclose(v12.elevation_deg, torch.tensor([20.0, -10, 20, -10, 20, -10]), atol=1e-4)
    assert torch.allclose(v12.fovy_deg, torch.full((6,), 30.0))
    v11 = C.zero123plus_rig("v1.1", input_azimuth=90.0)
    assert torch.allclose(v11.elevation_deg, torch.tensor([30.0, -20, 30, -20, 30, -20]), atol=1e-4)
    assert torch.allclose(v11.azimuth_deg, torch.tensor([120.0, 180, 240, 300, 0, 60]), atol=1e-4)
    # 280 px focal on 256 px, as the release's pose table.
    assert math.isclose(float(v11.intrinsics(256, 256)[0, 0, 0]), 280.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="v1.1"):
        C.zero123plus_rig("v2")


def test_mvdream_rig():
    rig = C.mvdream_rig()
    assert torch.allclose(rig.azimuth_deg, torch.tensor([0.0, 90, 180, 270]), atol=1e-4)
    assert torch.allclose(rig.elevation_deg, torch.full((4,), 15.0), atol=1e-4)
    assert torch.allclose(rig.distance, torch.full((4,), 1.2), atol=1e-5)


def test_same_framing_across_rigs():
    """Every rig sees the same half-width at the origin, so one [-1, 1] volume fits all of them."""
    def half_width(cam):
        return cam.distance * torch.tan(torch.deg2rad(cam.fovy_deg) / 2)

    reference = half_width(C.mvdream_rig())[0]
    for rig in (C.zero123plus_rig("v1.1"), C.zero123plus_rig("v1.2")):
        assert torch.allclose(half_width(rig), reference.expand(6), atol=1e-5)


def test_sampler_ranges_hold():
    sampler = C.CameraSampler()
    cams = sampler.sample(2000, torch.Generator().manual_seed(0))
    assert cams.distance.min() >= 1.0 - 1e-5 and cams.distance.max() <= 1.5 + 1e-5
    assert cams.fovy_deg.min() >= 40 and cams.fovy_deg.max() <= 60
    assert cams.elevation_deg.min() >= -35 - 1e-3 and cams.elevation_deg.max() <= 35 + 1e-3
    again = sampler.sample(2000, torch.Generator().manual_seed(0))
    assert torch.equal(cams.c2w, again.c2w)


def _release_collate(batch, generator, elevation_range=(-35.0, 35.0)):
    """threestudio's data/uncond.py collate as GeoDream ships it, written out: elevation, azimuth, distance, fovy."""
    lo, hi = elevation_range
    if float(torch.rand((), generator=generator)) < 0.5:
        elevation = torch.rand(batch, generator=generator) * (hi - lo) + lo
    else:
        s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
        elevation = torch.rad2deg(torch.asin(torch.rand(batch, generator=generator) * (s_hi - s_lo) + s_lo))
    azimuth = (torch.rand(batch, generator=generator) + torch.arange(batch)) / batch * 360.0 - 180.0
    distance = torch.rand(batch, generator=generator) * 0.5 + 1.0
    fovy = torch.rand(batch, generator=generator) * 20.0 + 40.0
    return elevation, azimuth, distance, fovy


def test_sampler_draws_as_the_release_does():
    """Same random stream, same cameras: the release's draws (batch-stratified azimuths included) over the ranges
    converted to our frame. The release's elevation range [-35, 35] (its Y is down) is [-35, 35] in ours; its
    azimuth range, the whole circle, stays the whole circle (ours = 180 - its)."""
    for seed, batch in ((0, 1), (1, 8), (2, 8), (5, 3)):
        cams = C.CameraSampler().sample(batch, torch.Generator().manual_seed(seed))
        elevation, azimuth, dist, fovy = _release_collate(batch, torch.Generator().manual_seed(seed))
        assert torch.allclose(cams.elevation_deg, elevation, atol=1e-3)
        assert torch.allclose(cams.azimuth_deg, azimuth % 360, atol=1e-3)
        assert torch.allclose(cams.distance, dist, atol=1e-5) and torch.allclose(cams.fovy_deg, fovy)
    # stratified: one azimuth in each eighth of the circle
    az = C.CameraSampler().sample(8, torch.Generator().manual_seed(9)).azimuth_deg
    assert sorted(((az + 180) % 360 // 45).tolist()) == list(range(8))


def test_elevation_histogram_is_the_release_two_part_distribution():
    """10,000 cameras (batches of 1, as refinement draws them): half uniform in angle, half uniform in sine over
    -35..35. Chi-square of 14 bins against the mixture's bin probabilities, and the mixture's own signature: the
    share within 10 deg of the horizon lies between its two parts'."""
    generator = torch.Generator().manual_seed(0)
    elevation = torch.cat([C.CameraSampler().sample(1, generator).elevation_deg for _ in range(10000)])
    edges = torch.linspace(-35.0, 35.0, 15)
    counts = torch.histc(elevation, bins=14, min=-35.0, max=35.0)
    sin = torch.sin(torch.deg2rad(edges))
    p_angle = torch.full((14,), 1 / 14)
    p_sine = (sin[1:] - sin[:-1]) / (sin[-1] - sin[0])
    expected = 10000 * (0.5 * p_angle + 0.5 * p_sine)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 36.1, chi2  # 13 degrees of freedom, p = 0.001
    near = float((elevation.abs() < 10).float().mean())
    share_angle, share_sine = 20 / 70, 2 * math.sin(math.radians(10)) / (2 * math.sin(math.radians(35)))
    assert abs(near - 0.5 * (share_angle + share_sine)) < 0.015, near


def test_sampler_distances_are_in_scene_units():
    """The release refines inside its prior's [-1, 1] box; our frame's box is larger, so distances scale with it."""
    box = torch.tensor([[-1.34, -1.34, -1.3], [1.34, 1.34, 1.3]])
    assert C.scene_unit(box) == pytest.approx(1.34)
    plain = C.CameraSampler().sample(64, torch.Generator().manual_seed(3))
    scaled = C.CameraSampler().sample(64, torch.Generator().manual_seed(3), unit=C.scene_unit(box))
    assert torch.allclose(scaled.distance, plain.distance * 1.34, atol=1e-5)
    assert torch.allclose(scaled.elevation_deg, plain.elevation_deg, atol=1e-3)


def _release_label(elevation_r: float, azimuth_r: float) -> str:
    """threestudio prompt_processors/base.py (GeoDream's copy, view_dependent_prompt_front off) with
    geodream-neus.yaml's thresholds 20/40/50, in the release's own frame; later rules win."""
    az = (azimuth_r + 180) % 360 - 180
    label = "side"
    if -40 < az < 40:  # its DirectionConfig "front" carries the text ", back view"
        label = "back"
    if az > 160 or az < -160:  # its "back" carries ", front view"
        label = "front"
    if elevation_r > 50:
        label = "overhead"
    return label


def test_view_direction_prompts_follow_the_release_rule():
    """The label of 2,000 sampled refinement cameras equals the release's rule applied to the same camera in the
    release's frame (elevation sign flipped, azimuth 180 - ours); no camera of the range is 'overhead'."""
    cams = C.CameraSampler().sample(2000, torch.Generator().manual_seed(4))
    ours = C.view_direction(cams.azimuth_deg, cams.elevation_deg)
    release = [_release_label(-e, 180.0 - a) for e, a in zip(cams.elevation_deg.tolist(), cams.azimuth_deg.tolist())]
    assert ours == release
    assert {"front", "back", "side"} == set(ours)
    names = C.view_direction(torch.tensor([0.0, 19.0, 21.0, 141.0, 139.0, -170.0, 90.0]), torch.zeros(7))
    assert names == ["front", "front", "side", "back", "side", "back", "side"]
    # "overhead" is the release's elevation above 50, i.e. a camera below -50 in our frame
    assert C.view_direction(torch.tensor([90.0, 90.0]), torch.tensor([60.0, -60.0])) == ["side", "overhead"]


def test_dict_round_trip():
    rig = C.zero123plus_rig("v1.2")
    back = C.Cameras.from_dict(rig.to_dict())
    assert torch.allclose(back.c2w, rig.c2w) and torch.equal(back.fovy_deg, rig.fovy_deg) and back.name == rig.name
    assert len(rig[[0, 2]]) == 2 and len(rig[1]) == 1
