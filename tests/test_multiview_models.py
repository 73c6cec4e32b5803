"""Multi-view model internals, each checked against an independent computation: MVDream's UNet against diffusers'
SD UNet, its camera input against MVDream's own formula, the format conversions against OpenCLIP and the
original VAE, reference attention against a hand-written attention, grid and object preprocessing by hand."""
import math

import numpy as np
import pytest
import torch
from tests import twins_multiview as tw

from geodream_pack.geodream_ops import cameras
from geodream_pack.geodream_ops.multiview import (ldm_checkpoint, ldm_schedule, mvdream_pipeline, object_preprocess,
                                                 zero123plus)
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.multiview.mvdream_unet import MultiViewUNet, config_from_state_dict



@pytest.fixture(scope="module")
def unet():
    return tw.tiny_mvdream_unet(seed=3)


def _inputs(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 4, 8, 8, generator=g), torch.randn(n, 5, tw.TEXT_WIDTH, generator=g),
            cameras.mvdream_camera_embedding(cameras.mvdream_rig()))


def test_single_view_mode_equals_diffusers_sd_unet(unet):
    """With cross-view attention off (num_views=1) and no camera, every view equals a call of diffusers' SD 2.x
    UNet holding the same weights, converted from the published ldm names by diffusers' own converter."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    reference = UNet2DConditionModel(
        sample_size=8, block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=tw.TEXT_WIDTH,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(1, 2), use_linear_projection=True).eval()
    ldm = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    reference.load_state_dict(convert_ldm_unet_checkpoint(ldm, reference.config), strict=True)
    x, context, _ = _inputs()
    t = torch.tensor([981, 500, 21, 1])
    with torch.no_grad():
        ours = unet(x, t, context, num_views=1)
        for i in range(4):
            single = reference(x[i:i + 1], t[i:i + 1], context[i:i + 1]).sample
            assert torch.allclose(ours[i:i + 1], single, atol=1e-5), i


def test_cross_view_attention_is_permutation_equivariant_and_mixes_views(unet):
    x, context, camera = _inputs()
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = unet(x, 500, context, camera, num_views=4)
        permuted = unet(x[perm], 500, context[perm], camera[perm], num_views=4)
        assert torch.allclose(permuted, out[perm], atol=1e-5)
        # The equivariance is not the trivial one of independent views: changing view 3 moves view 0's output
        # when views attend to each other, and does not when they do not.
        changed = x.clone()
        changed[3] += 1.0
        joint = unet(changed, 500, context, camera, num_views=4)
        alone, alone_changed = unet(x, 500, context, camera, num_views=1), unet(changed, 500, context, camera, num_views=1)
    assert (joint[0] - out[0]).abs().max() > 1e-4
    assert torch.allclose(alone_changed[0], alone[0], atol=1e-6)


def test_camera_embedding_enters_through_the_timestep_embedding(unet):
    x, context, camera = _inputs()
    with torch.no_grad():
        with_camera = unet(x, 500, context, camera, num_views=4)
        other = unet(x, 500, context, camera.roll(1, dims=0), num_views=4)
    assert (with_camera - other).abs().max() > 1e-4


def test_published_sd21_layout_and_config_inference():
    """The full-size UNet (on the meta device, no memory) has the SD 2.1 parameter count plus MVDream's camera MLP
    and the published key names and shapes; the config read back from the names is the one it was built with."""
    with torch.device("meta"):
        full = MultiViewUNet()
    state = full.state_dict()
    sd21_unet = 865_910_724  # diffusers' stabilityai/stable-diffusion-2-1-base UNet
    camera_mlp = 16 * 1280 + 1280 + 1280 * 1280 + 1280
    assert sum(v.numel() for v in state.values()) == sd21_unet + camera_mlp
    expected = {"time_embed.0.weight": (1280, 320), "camera_embed.0.weight": (1280, 16), "camera_embed.2.weight": (1280, 1280),
                "input_blocks.0.0.weight": (320, 4, 3, 3), "input_blocks.1.1.proj_in.weight": (320, 320),
                "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": (320, 320),
                "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
                "input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
                "input_blocks.3.0.op.weight": (320, 320, 3, 3), "input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
                "middle_block.1.transformer_blocks.0.attn1.to_out.0.weight": (1280, 1280),
                "output_blocks.2.1.conv.weight": (1280, 1280, 3, 3), "output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
                "output_blocks.8.2.conv.weight": (640, 640, 3, 3), "output_blocks.11.1.proj_out.weight": (320, 320),
                "out.2.weight": (4, 320, 3, 3)}
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert config_from_state_dict(state) == full.config


def test_tiny_config_round_trip(unet):
    assert config_from_state_dict(unet.state_dict()) == unet.config


def test_camera_input_matches_mvdream_get_camera():
    """Our rig converted for MVDream equals MVDream's get_camera(4, elevation, azimuth_start=90), written out
    from its definition: OpenGL look-at in a Y-up world, then the Blender flip (y, z) -> (-z, y)."""
    def get_camera(elevation, azimuth_start):
        rows = []
        for azimuth in np.arange(azimuth_start, 360 + azimuth_start, 90):
            el, az = np.radians(elevation), np.radians(azimuth)
            pos = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
            forward = -pos / np.linalg.norm(pos)
            right = np.cross(forward, [0, 1, 0])
            right /= np.linalg.norm(right)
            up = np.cross(right, forward)
            c2w = np.eye(4)
            c2w[:3, :3] = np.stack([right, up, -forward], axis=1)
            c2w[:3, 3] = pos
            flip = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
            rows.append((flip @ c2w).reshape(-1))
        return torch.tensor(np.stack(rows), dtype=torch.float32)

    for elevation in (15.0, 0.0, 30.0):
        ours = cameras.mvdream_camera_embedding(cameras.mvdream_rig(elevation))
        assert torch.allclose(ours, get_camera(elevation, 90.0), atol=1e-5)


def test_open_clip_text_tower_conversion_matches_open_clip():
    """The single file's OpenCLIP text tower, converted to transformers, gives OpenCLIP's own penultimate-layer
    output after ln_final (SD 2.x's conditioning)."""
    clip = tw.tiny_open_clip_text(seed=5)
    state = {"cond_stage_model.model." + k: v for k, v in clip.state_dict().items() if not k.startswith("visual.")}
    encoder = mvdream_pipeline._text_encoder_from_open_clip(state).eval()
    ids = mvdream_pipeline._open_clip_tokenizer(77)(["a red owl, 3d asset", ""])
    with torch.no_grad():
        x = clip.token_embedding(ids) + clip.positional_embedding
        for block in clip.transformer.resblocks[:-1]:
            x = block(x, attn_mask=clip.attn_mask)
        expected = clip.ln_final(x)
        ours = encoder(ids).last_hidden_state
    assert torch.allclose(ours, expected, atol=1e-5)


def test_ldm_vae_conversion_restores_the_original():
    vae = tw._randomise(tw._tiny_vae(), 9)
    loaded = ldm_checkpoint.vae_from_ldm(tw.diffusers_vae_to_ldm(vae.state_dict(), 2))
    for key, value in vae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert loaded.config.scaling_factor == ldm_checkpoint.LATENT_SCALE


def test_grid_split_merge_round_trip_and_order():
    t = 4
    grid = torch.zeros(3 * t, 2 * t, 1)
    for k in range(6):
        r, c = divmod(k, 2)
        grid[r * t:(r + 1) * t, c * t:(c + 1) * t] = k
    tiles = zero123plus.split_grid(grid)
    assert tiles.shape == (6, t, t, 1)
    assert torch.equal(tiles[:, 0, 0, 0], torch.arange(6.0))  # row-major, the rig's order
    assert torch.equal(zero123plus.merge_grid(tiles), grid)
    random_tiles = torch.rand(6, 5, 5, 3)
    assert torch.equal(zero123plus.split_grid(zero123plus.merge_grid(random_tiles)), random_tiles)
    with pytest.raises(ValueError, match="3x2"):
        zero123plus.split_grid(torch.zeros(10, 8, 3))


def test_reference_attention_attends_to_reference_tokens():
    """In read mode a self-attention's keys/values are its own tokens followed by the kept reference tokens."""
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    bank = zero123plus.ReferenceBank()
    attn.set_processor(zero123plus.ReferenceAttnProcessor("layer", bank))
    g = torch.Generator().manual_seed(0)
    x, ref = torch.randn(1, 6, 16, generator=g), torch.randn(1, 4, 16, generator=g)

    def by_hand(queries, keys):
        q = attn.to_q(queries).reshape(1, -1, 2, 8).transpose(1, 2)
        k = attn.to_k(keys).reshape(1, -1, 2, 8).transpose(1, 2)
        v = attn.to_v(keys).reshape(1, -1, 2, 8).transpose(1, 2)
        w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
        return attn.to_out[0]((w @ v).transpose(1, 2).reshape(1, -1, 16))

    with torch.no_grad():
        assert torch.allclose(attn(x), by_hand(x, x), atol=1e-5)
        bank.mode = "write"
        attn(ref)
        bank.mode = "read"
        assert torch.allclose(attn(x), by_hand(x, torch.cat([x, ref], dim=1)), atol=1e-5)
    assert bank.states == {}  # consumed, so a stale reference is never reused


def test_object_on_grey_centres_and_scales_by_hand():
    image = torch.rand(40, 60, 3)
    mask = torch.ones(40, 60)  # ComfyUI: 1 = background
    mask[5:17, 40:49] = 0  # a 12 x 9 object, off centre
    image[5:17, 40:49] = torch.tensor([1.0, 0.0, 0.0])
    out = object_preprocess.object_on_grey(image, mask)
    side = round(12 / object_preprocess.OBJECT_FILL)  # 16
    assert out.shape == (side, side, 3)
    rows, cols = torch.nonzero((out - torch.tensor([1.0, 0.0, 0.0])).abs().sum(-1) < 1e-6, as_tuple=True)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 13, 3, 11)  # centred: (16-12)/2, (16-9)//2
    grey = torch.full((3,), object_preprocess.GREY)
    assert torch.allclose(out[0, 0], grey) and torch.allclose(out[-1, -1], grey)
    # Without a mask the image is only padded to a square, centred, with grey.
    padded = object_preprocess.object_on_grey(image)
    assert padded.shape == (60, 60, 3) and torch.equal(padded[10:50], image) and torch.allclose(padded[0, 0], grey)
    assert torch.equal(object_preprocess.object_on_grey(image, torch.zeros(64, 64)), padded)  # LoadImage, no alpha
    with pytest.raises(GeoDreamError, match="no object"):
        object_preprocess.object_on_grey(image, torch.ones(40, 60))


def test_reference_noise_equals_euler_add_noise_then_input_scaling():
    from diffusers import EulerAncestralDiscreteScheduler

    scheduler = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                                timestep_spacing="trailing")
    scheduler.set_timesteps(7)
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(2, 4, 5, 5, generator=g), torch.randn(2, 4, 5, 5, generator=g)
    for step, t in enumerate(scheduler.timesteps):
        sigma = scheduler.sigmas[step]
        published = (x + sigma * noise) / (sigma ** 2 + 1) ** 0.5
        assert torch.allclose(scheduler.add_noise(x, noise, t.reshape(1)), x + sigma * noise, atol=1e-5)
        assert torch.allclose(zero123plus.noised_reference(scheduler.alphas_cumprod, x, noise, t), published, atol=1e-5)


def test_mvdream_sampler_is_ldm_ddim():
    """Our DDIM settings reproduce latent diffusion's DDIM sampler (MVDream's): its "linear" betas, timesteps
    1, 21, ..., 981 for 50 steps, and the eta=0 update with alpha_prev = alphas_cumprod[0] at the last step."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(mvdream_pipeline.SCHEDULER_CONFIG)
    scheduler.set_timesteps(50)
    assert scheduler.timesteps.tolist() == list(range(981, 0, -20))
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0).float()
    assert torch.allclose(scheduler.alphas_cumprod, abar, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    for t, prev in ((981, 961), (1, None)):
        a, a_prev = abar[t], abar[prev] if prev is not None else abar[0]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        by_hand = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        assert torch.allclose(scheduler.step(eps, t, x).prev_sample, by_hand, atol=1e-5)


@pytest.mark.parametrize("steps", [50, 30, 7, 27])
def test_mvdream_timesteps_are_ldms_at_any_count(steps):
    """ldm make_ddim_timesteps("uniform") written out: c = 1000 // S, timesteps 0, c, 2c, ... below 1000, plus 1;
    the DDIM step from each goes to the one before it in that list (c lower), from the first to alphas_cumprod[0]."""
    from diffusers import DDIMScheduler

    c = 1000 // steps
    ldm = [t + 1 for t in range(0, 1000, c) if t + 1 < 1000][::-1]  # ldm fails on 1000 (27 steps: c = 37)
    assert ldm_schedule.ddim_timesteps(steps).flip(0).tolist() == ldm
    scheduler = DDIMScheduler.from_config(mvdream_pipeline.SCHEDULER_CONFIG)
    scheduler.set_timesteps(steps)
    scheduler.timesteps = ldm_schedule.ddim_timesteps(steps).flip(0)
    abar = scheduler.alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(1, 4, 3, 3, generator=g), torch.randn(1, 4, 3, 3, generator=g)
    for index in (0, len(ldm) - 1):
        t = ldm[index]
        a, a_prev = abar[t], abar[ldm[index + 1]] if index + 1 < len(ldm) else abar[0]
        by_hand = a_prev.sqrt() * (x - (1 - a).sqrt() * eps) / a.sqrt() + (1 - a_prev).sqrt() * eps
        assert torch.allclose(scheduler.step(eps, t, x).prev_sample, by_hand, atol=1e-5)
