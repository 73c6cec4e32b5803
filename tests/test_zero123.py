"""Zero123-XL / Stable Zero123: the published checkpoint layout through the real loader, ldm's DDIM (eta 1) and the
camera term against the release's code written out, One-2-3-45's 40 cameras against the release's get_poses, and the
generate node on the twin."""
import math

import numpy as np
import pytest
import torch
from tests import twins_multiview as tw

from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.multiview import ldm_schedule, zero123, zero123_recipe
from geodream_pack.nodes.multiview import GeoDreamLoadZero123, GeoDreamMultiViewGenerate

SIDE = 16  # twin image side (256 in the release)


def _load(pack_dirs, name="zero123-xl.ckpt", variant="auto", view_set=zero123_recipe.VIEW_SETS[0], **twin):
    tw.write_zero123_checkpoint(pack_dirs["models"] / "checkpoints" / name, **twin)
    return GeoDreamLoadZero123().load(f"checkpoints/{name}", variant, view_set, SIDE)[0]


def test_ckpt_and_safetensors_twins_load_the_same_networks(pack_dirs):
    ckpt = _load(pack_dirs, "zero123-xl.ckpt")
    st = _load(pack_dirs, "stable_zero123.safetensors")
    assert (ckpt.variant, st.variant) == ("zero123-xl", "stable-zero123")
    assert ckpt.view_set == zero123_recipe.VIEW_SETS[0] == zero123.Zero123.view_set
    for a, b in zip(ckpt.modules(), st.modules()):
        for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), key
    # The UNet is the twin's own, rebuilt from the ldm names: same outputs as the diffusers original.
    original = tw.tiny_zero123_unet(0)
    x, ctx = torch.randn(2, 8, 8, 8), torch.randn(2, 1, tw.ZERO123_CONTEXT)
    with torch.no_grad():
        assert torch.allclose(ckpt.unet(x, 501, ctx).sample, original(x, 501, ctx).sample, atol=1e-6)


def test_ema_weights_are_the_ones_sampled(pack_dirs):
    """ldm's ema_scope samples with model_ema.* when the file has it (use_ema defaults to True)."""
    loaded = _load(pack_dirs, ema=True)
    for key, value in tw.tiny_zero123_unet(10).state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[key], value), key


def test_a_wrong_file_is_named_for_what_it_is(pack_dirs):
    tw.write_mvdream_single_file(pack_dirs["models"] / "checkpoints" / "zero123-xl.ckpt")
    with pytest.raises(GeoDreamError, match="MVDream's single-file checkpoint"):
        GeoDreamLoadZero123().load("checkpoints/zero123-xl.ckpt", "auto", zero123_recipe.VIEW_SETS[0], SIDE)
    state = tw.zero123_state_dict()
    key = "model.diffusion_model.input_blocks.0.0.weight"
    state[key] = state[key][:, :4]
    torch.save({"state_dict": state}, pack_dirs["models"] / "checkpoints" / "sd.ckpt")
    with pytest.raises(GeoDreamError, match="4 input channels"):
        GeoDreamLoadZero123().load("checkpoints/sd.ckpt", "zero123-xl", zero123_recipe.VIEW_SETS[0], SIDE)
    tw.write_zero123_checkpoint(pack_dirs["models"] / "checkpoints" / "zero123-xl.ckpt")
    with pytest.raises(GeoDreamError, match="multiple of 4"):  # the twin: VAE x2, UNet x2
        GeoDreamLoadZero123().load("checkpoints/zero123-xl.ckpt", "auto", zero123_recipe.VIEW_SETS[0], 18)
    with pytest.raises(GeoDreamError, match="set variant"):
        tw.write_zero123_checkpoint(pack_dirs["models"] / "checkpoints" / "weights.ckpt")
        GeoDreamLoadZero123().load("checkpoints/weights.ckpt", "auto", zero123_recipe.VIEW_SETS[0], SIDE)


def _release_T(xs, ys, model_type):
    """zero123_utils.sample_model_batch's T rows, written out."""
    return torch.tensor(np.array([[np.radians(x), np.sin(np.radians(y)), np.cos(np.radians(y)),
                                   0 if model_type == "zero123" else np.radians(90)] for x, y in zip(xs, ys)])).float()


def test_camera_term_is_the_release_one_for_both_models():
    xs, ys = [0, -30, 10, -10, 30], [0, 30, 120, 350, 300]
    assert torch.allclose(zero123.camera_term(xs, ys, "zero123-xl"), _release_T(xs, ys, "zero123"), atol=1e-7)
    assert torch.allclose(zero123.camera_term(xs, ys, "stable-zero123"), _release_T(xs, ys, "sd-zero123"), atol=1e-7)
    assert zero123.camera_term([0], [0], "stable-zero123")[0, 3] == pytest.approx(math.pi / 2)


def _release_ddim(model, x_cond, xs, ys, model_type, steps, scale, generator):
    """sample_model_batch + DDIMSampler.sample (eta 1) + p_sample_ddim, written out from the release's ldm code."""
    acp = ldm_schedule.alphas_cumprod()  # register_schedule's float32 buffer (checked against it in the test)
    num_ddpm = 1000
    ddim_timesteps = np.asarray(list(range(0, num_ddpm, num_ddpm // steps))) + 1
    alphas = acp[ddim_timesteps]
    alphas_prev = np.asarray([acp[0]] + acp[ddim_timesteps[:-1]].tolist())
    sigmas = 1.0 * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    sqrt_one_minus = np.sqrt(1. - alphas)
    n = len(xs)
    side = model.image_encoder.image_size[0]
    clip_in = torch.nn.functional.interpolate(x_cond, (side, side), mode="bicubic", align_corners=True)
    mean, std = torch.tensor(zero123.CLIP_MEAN)[:, None, None], torch.tensor(zero123.CLIP_STD)[:, None, None]
    emb = model.image_encoder(((clip_in + 1) / 2 - mean) / std).unsqueeze(1).tile(n, 1, 1)
    cond = model.cc_projection(torch.cat([emb, _release_T(xs, ys, model_type)[:, None, :]], dim=-1))
    concat = model.vae.encode(x_cond).latent_dist.mode().repeat(n, 1, 1, 1)
    c_in = torch.cat([torch.zeros_like(cond), cond])
    concat_in = torch.cat([torch.zeros(n, 4, SIDE // 2, SIDE // 2), concat])
    shape = (n, 4, SIDE // 2, SIDE // 2)
    img = torch.randn(shape, generator=generator)
    total = ddim_timesteps.shape[0]
    for i, step in enumerate(np.flip(ddim_timesteps)):
        index = total - i - 1
        e_u, e_t = model.unet(torch.cat([torch.cat([img] * 2), concat_in], 1), int(step), c_in).sample.chunk(2)
        e_t = e_u + scale * (e_t - e_u)
        a_t = torch.full((n, 1, 1, 1), alphas[index])
        a_prev = torch.full((n, 1, 1, 1), alphas_prev[index])
        sigma_t = torch.full((n, 1, 1, 1), sigmas[index])
        sqrt_one_minus_at = torch.full((n, 1, 1, 1), sqrt_one_minus[index])
        pred_x0 = (img - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
        img = a_prev.sqrt() * pred_x0 + dir_xt + sigma_t * torch.randn(shape, generator=generator)
    decoded = model.vae.decode(1. / 0.18215 * img).sample
    return torch.clamp((decoded + 1.0) / 2.0, min=0.0, max=1.0).permute(0, 2, 3, 1)


@pytest.mark.parametrize("variant,model_type", [("zero123-xl", "zero123"), ("stable-zero123", "sd-zero123")])
def test_sampler_equals_the_release_ddim_with_the_same_noise(pack_dirs, variant, model_type):
    model = _load(pack_dirs, variant=variant)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64).numpy() ** 2
    assert torch.equal(ldm_schedule.alphas_cumprod(), torch.tensor(np.cumprod(1. - betas, axis=0)).float())
    assert len(ldm_schedule.ddim_timesteps(75)) == 77 and len(ldm_schedule.ddim_timesteps(50)) == 50
    image = torch.rand(SIDE, SIDE, 3)
    xs, ys, steps = [0, -30, 10], [0, 120, 0], 8
    ours = model.generate(image, xs, ys, steps, 3.0, seed=5)
    with torch.no_grad():
        theirs = _release_ddim(model, image.permute(2, 0, 1)[None] * 2 - 1, xs, ys, model_type, steps, 3.0,
                               torch.Generator().manual_seed(5))
    assert ours.shape == (3, SIDE, SIDE, 3)
    assert (ours - theirs).abs().max() < 1e-5
    assert ours.std() > 0.01  # not a constant image


def _release_poses(init_elev):
    """utils/utils.py get_poses + calc_pose (polar 'init_elev'), written out in numpy: ids and c2w [40, 3, 4]."""
    mid, deg = init_elev, 10
    if init_elev <= 75:
        low = init_elev + 30
        polars = [mid] * 4 + [low] * 4 + [mid - deg, mid + deg, mid, mid] * 4 + [low - deg, low + deg, low, low] * 4
        ids = [f"{n}.png" for n in range(8)] + [f"{n}_{v}.png" for n in range(8) for v in range(4)]
    else:
        high = init_elev - 30
        polars = [mid] * 4 + [high] * 4 + [mid - deg, mid + deg, mid, mid] * 4 + [high - deg, high + deg, high, high] * 4
        firsts = list(range(4)) + list(range(8, 12))
        ids = [f"{n}.png" for n in firsts] + [f"{n}_{v}.png" for n in firsts for v in range(4)]
    over, eye = [30 + x * 90 for x in range(4)], [60 + x * 90 for x in range(4)]
    thetas = np.radians(over + eye + [t + s for t in over for s in [0, 0, -deg, deg]] + [t + s for t in eye for s in [0, 0, -deg, deg]])
    phis = np.radians(polars)
    centers = np.stack([1.2 * np.sin(thetas) * np.sin(phis), -1.2 * np.cos(thetas) * np.sin(phis), 1.2 * np.cos(phis)], -1)
    forward = centers / np.linalg.norm(centers, axis=-1, keepdims=True)
    right = np.cross(np.array([0, 0, 1.0]), forward)
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    up = np.cross(forward, right)
    up /= np.linalg.norm(up, axis=-1, keepdims=True)
    return ids, np.concatenate([np.stack([right, up, forward], -1), centers[..., None]], -1)


@pytest.mark.parametrize("elevation", [0.0, 20.0])
def test_recipe_cameras_project_like_the_release_pose_table(elevation):
    ids, poses = _release_poses(90 - elevation)
    ours = zero123_recipe.recipe_cameras(elevation)
    assert len(ours) == len(ids) == 40
    blender2opencv = np.diag([1.0, -1, -1, 1])
    K = np.array([[280.0, 0, 128], [0, 280.0, 128], [0, 0, 1]])
    points_ours = torch.rand(50, 3) * 0.8 - 0.4
    # The release's world is ours turned by -60 degrees about Z (its input view sits at theta 30, ours on +X).
    a = math.radians(-60)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    points_release = points_ours.double().numpy() @ rz.T
    uv_ours, _ = ours.project(points_ours, 256, 256)
    for k in range(40):
        c2w = np.vstack([poses[k], [0, 0, 0, 1]]) @ blender2opencv
        w2c = np.linalg.inv(c2w)
        cam = points_release @ w2c[:3, :3].T + w2c[:3, 3]
        assert (cam[:, 2] > 0).all()
        uv = cam @ K.T
        uv = uv[:, :2] / uv[:, 2:]
        assert np.abs(uv_ours[k].double().numpy() - uv).max() < 1e-3, ids[k]
    # The release's src_views skip 2_2.png and 2_3.png (views 18, 19) and read 0.png as reference.
    assert [ids[k] for k in zero123_recipe.PRIOR_VIEWS[:1]] == ["0.png"]
    assert {ids[k] for k in range(40)} - {ids[k] for k in zero123_recipe.PRIOR_VIEWS} == \
        ({"2_2.png", "2_3.png"} | {f"{n}.png" for n in (1, 2, 3, 8, 9, 10, 11)} if elevation == 0 else
         {"2_2.png", "2_3.png"} | {f"{n}.png" for n in range(1, 8)})


def test_second_stage_input_is_the_saved_png_whitened():
    views = torch.tensor([[[[0.999, 0.5, 0.9921]]]])  # 254.7 -> 254 -> 255; 127.5 -> 127; 252.98 -> 252
    assert torch.allclose(zero123_recipe.as_saved(views), torch.tensor([[[[1.0, 127 / 255, 252 / 255]]]]))


def test_generate_returns_the_release_views_on_white_with_cameras(pack_dirs):
    model = _load(pack_dirs)
    image = torch.zeros(1, 24, 20, 3)
    image[:, 6:18, 5:15] = torch.tensor([0.8, 0.2, 0.1])
    mask = torch.ones(1, 24, 20)
    mask[:, 6:18, 5:15] = 0
    views, cams, masks = GeoDreamMultiViewGenerate().generate(model, "", "", 2, 0.0, 3, image=image, mask=mask)
    assert views.shape == (31, SIDE, SIDE, 3) and len(cams) == 31 and masks.shape == (31, SIDE, SIDE)
    everything = zero123_recipe.recipe_cameras()
    assert torch.allclose(cams.c2w, everything.c2w[list(zero123_recipe.PRIOR_VIEWS)])
    again = GeoDreamMultiViewGenerate().generate(model, "", "", 2, 0.0, 3, image=image, mask=mask)[0]
    assert torch.equal(views, again)  # same seed, same views
    with pytest.raises(GeoDreamError, match="Zero123 needs an image"):
        GeoDreamMultiViewGenerate().generate(model, "", "", 2, 0.0, 3)


def _core_camera_embeddings(elevation, azimuth):
    """comfy_extras/nodes_stable3d.py camera_embeddings, written out."""
    elevation, azimuth = torch.as_tensor([elevation]), torch.as_tensor([azimuth])
    return torch.stack([torch.deg2rad((90 - elevation) - 90), torch.sin(torch.deg2rad(azimuth)),
                        torch.cos(torch.deg2rad(azimuth)), torch.deg2rad(90 - torch.full_like(elevation, 0))], -1)


@pytest.mark.parametrize("source", ["StableZero123_Conditioning", "StableZero123_Conditioning_Batched"])
def test_core_stable_zero123_cameras_embed_as_core_does(source):
    from geodream_pack.geodream_ops import cameras
    from geodream_pack.nodes.cameras import GeoDreamCoreViewCameras

    elevation, azimuth, de, da, n = 10.0, -40.0, 7.5, 50.0, 6
    cams = GeoDreamCoreViewCameras().build(source, elevation, azimuth, n, de, da, 21, 1.2, 49.1)[0]
    expected = []
    for _ in range(n):  # StableZero123_Conditioning_Batched.execute's loop
        expected.append(_core_camera_embeddings(elevation, azimuth))
        if source.endswith("Batched"):
            elevation += de
            azimuth += da
    source_camera = cameras.Cameras.from_spherical(0.0, 0.0, 1.2, 49.1)
    ours = zero123.camera_term(*zero123.relative_angles(source_camera, cams), "stable-zero123")
    assert torch.allclose(ours, torch.cat(expected), atol=1e-5)
    assert torch.allclose(cams.distance, torch.tensor(1.2))


def test_core_sv3d_cameras_follow_the_orbit():
    from geodream_pack.nodes.cameras import GeoDreamCoreViewCameras

    cams = GeoDreamCoreViewCameras().build("SV3D_Conditioning", 12.0, 0.0, 1, 0.0, 0.0, 21, 2.0, 33.8)[0]
    azimuth, azimuths = 0, []
    for _ in range(21):  # SV3D_Conditioning.execute
        azimuths.append(azimuth)
        azimuth += 360 / (max(21, 2) - 1)
    assert len(cams) == 21
    assert torch.allclose(cams.elevation_deg, torch.tensor(12.0), atol=1e-4)
    d = (cams.azimuth_deg - torch.tensor(azimuths)) % 360
    assert torch.minimum(d, 360 - d).max() < 1e-3


def test_release_settings_are_the_defaults(pack_dirs, monkeypatch):
    """steps 0 / guidance 0 run the release's 75 (77 timesteps) and 50 steps at CFG 3; the progress bar counts them."""
    model = _load(pack_dirs)
    seen = {}

    def run(m, condition, first, neighbours, guidance, seed, input_elevation, on_step):
        seen.update(first=first, neighbours=neighbours, guidance=guidance, elevation=input_elevation,
                    side=condition.shape[0])
        return torch.ones(40, SIDE, SIDE, 3)

    monkeypatch.setattr(zero123_recipe, "run", run)
    views, cams, masks = GeoDreamMultiViewGenerate().generate(model, "", "", 0, 0.0, 0, image=torch.rand(1, 20, 20, 3))
    assert seen == dict(first=75, neighbours=50, guidance=3.0, elevation=0.0, side=SIDE)
    assert zero123_recipe.total_steps(75, 50) == 77 + 8 * 50
    assert views.shape[0] == 31 and not masks.any()  # auto matting is none for Zero123, as the release
