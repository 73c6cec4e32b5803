"""VSD / SDS on tiny random SD twins loaded through the real loaders: the latent gradient equals the formula
computed by hand, the LoRA (and only the LoRA) learns, and the pretrained branch never sees the adapters."""
import pytest
import torch

from geodream_pack.geodream_ops.cameras import Cameras
from geodream_pack.geodream_ops.guidance.score_distillation import make_guidance_fn
from geodream_pack.geodream_ops.guidance.sd_guidance import load_guidance, load_model

from tests import twins_sd  # noqa: E402  (a helper beside the tests, found through the pack root)

PROMPT = "a red ball"


@pytest.fixture(scope="module")
def twin_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    twins_sd.save_diffusers_folder(root / "base", seed=0)
    twins_sd.save_diffusers_folder(root / "v", seed=1, prediction_type="v_prediction")
    return root


def _cameras():
    return Cameras.from_spherical([10.0, 30.0], [0.0, 170.0], 1.3, 50.0)  # a front and a back view


def _uncond_c2w(elevation_deg, azimuth_deg, distance):
    """threestudio/data/uncond.py as the release runs it, written out: position (d cos e sin a, d sin e,
    d cos e cos a), up (0, -1, 0), lookat = normalize(-position), right = normalize(lookat x up),
    up = normalize(right x lookat), c2w = [right, up, -lookat, position]."""
    e, a = torch.deg2rad(torch.as_tensor(elevation_deg)), torch.deg2rad(torch.as_tensor(azimuth_deg))
    position = torch.stack([distance * e.cos() * a.sin(), distance * e.sin(), distance * e.cos() * a.cos()], -1)
    up = torch.tensor([0.0, -1.0, 0.0]).expand_as(position)
    lookat = torch.nn.functional.normalize(-position, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(lookat, up, dim=-1), dim=-1)
    up = torch.nn.functional.normalize(torch.linalg.cross(right, lookat, dim=-1), dim=-1)
    c2w = torch.zeros(len(position), 4, 4)
    c2w[:, :3, :3] = torch.stack([right, up, -lookat], dim=-1)
    c2w[:, :3, 3], c2w[:, 3, 3] = position, 1.0
    return c2w


def _release_camera_of(cameras):
    """The release's camera for ours: its elevation is minus ours (Y down), its azimuth 180 - ours, its distance
    ours over the scene unit."""
    return _uncond_c2w(-cameras.elevation_deg, 180.0 - cameras.azimuth_deg, cameras.distance / cameras.scene_unit)


def test_lora_camera_input_is_the_releases_c2w():
    """The LoRA is fed the release's camera-to-world (distances 1-1.5 in its unit), for cameras sampled in ours."""
    from geodream_pack.geodream_ops.cameras import CameraSampler
    from geodream_pack.geodream_ops.prior.release_frame import release_c2w

    cameras = CameraSampler().sample(4, torch.Generator().manual_seed(0), unit=1.34)
    assert cameras.scene_unit == 1.34
    expected = _release_camera_of(cameras)
    torch.testing.assert_close(release_c2w(cameras), expected, atol=1e-5, rtol=0)
    distance = expected[:, :3, 3].norm(dim=-1)
    assert ((distance >= 1.0 - 1e-5) & (distance <= 1.5 + 1e-5)).all()
    assert torch.equal(release_c2w(cameras[[1, 2]]), release_c2w(cameras)[[1, 2]])


def _randomise_lora(fn):
    with torch.no_grad():
        for p in fn.lora.parameters():
            p.normal_(0, 0.2)


def _by_hand(fn, guidance, latents, cameras, generator, mode):
    """w(t) (eps_pretrain - eps_other) from separate UNet calls, with the draws ``generator`` will make."""
    lo, hi = fn.timestep_range(0, 100)
    t = torch.randint(lo, hi + 1, (len(latents),), generator=generator)
    noise = torch.randn(latents.shape, generator=generator)
    a = guidance.base.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
    unet = guidance.base.unet
    views = [f"{PROMPT}, front view", f"{PROMPT}, back view"]
    cond = torch.cat([unet(noisy[i:i + 1], t[i:i + 1], encoder_hidden_states=guidance.encode_text([views[i]])).sample
                      for i in range(2)])
    free = unet(noisy, t, encoder_hidden_states=guidance.encode_text(["", ""])).sample
    # threestudio: VSD (stable_diffusion_vsd_guidance.py) uncond + s (text - uncond); SDS (stable_diffusion_guidance.py)
    # text + s (text - uncond), so its CFG 100 is 101 in the usual form
    eps_pretrain = free + 7.5 * (cond - free) if mode == "vsd" else cond + 100.0 * (cond - free)
    if mode == "sds":
        return (1 - a) * (eps_pretrain - noise)
    with fn.lora.active() as lora_unet:
        out = lora_unet(noisy, t, encoder_hidden_states=guidance.encode_text([PROMPT, PROMPT]),
                        class_labels=_release_camera_of(cameras).reshape(2, 16)).sample
    if guidance.lora.prediction_type == "v_prediction":
        a_lora = guidance.lora.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        out = (1 - a_lora).sqrt() * noisy + a_lora.sqrt() * out
    return (1 - a) * (eps_pretrain - out)


@pytest.mark.parametrize("mode,lora_model", [("vsd", None), ("vsd", "v"), ("sds", None)])
def test_latent_gradient_is_the_formula(twin_dirs, mode, lora_model, monkeypatch):
    guidance = load_guidance(twin_dirs / "base", twin_dirs / lora_model if lora_model else None)
    fn = make_guidance_fn(guidance, PROMPT, mode=mode, seed=3)
    if mode == "vsd":
        _randomise_lora(fn)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = _by_hand(fn, guidance, latents, _cameras(), torch.Generator().set_state(fn.generator.get_state()), mode)
    leaf = latents.clone().requires_grad_(True)
    monkeypatch.setattr(guidance, "encode_images", lambda images, generator=None: leaf)
    loss = fn(torch.zeros(2, 3, 16, 16), _cameras(), step=0, total_steps=100)
    loss.backward()
    assert expected.abs().mean() > 1e-3
    # The by-hand UNet calls are batched differently, so float32 rounding of (cond - free) differs; CFG multiplies
    # it by its scale (100 for SDS against 7.5 for VSD), and the tolerance with it.
    tol = 1e-4 * (100.0 if mode == "sds" else 7.5) / 7.5
    torch.testing.assert_close(leaf.grad * len(latents), expected, atol=tol, rtol=tol)


def test_lora_learns_and_base_stays_frozen(twin_dirs):
    guidance = load_guidance(twin_dirs / "base")
    fn = make_guidance_fn(guidance, PROMPT, mode="vsd", seed=0)
    latents = torch.randn(2, 4, 8, 8)
    fn.lora_loss(latents, _cameras()).backward()
    lora_params = dict(fn.lora.named_parameters())
    assert all(p.grad is not None for p in lora_params.values())
    assert all(lora_params[k].grad.abs().sum() > 0 for k in lora_params if k.endswith("up.weight"))
    assert lora_params["camera_embedding.linear_1.weight"].grad.abs().sum() > 0
    lora_ids = {id(p) for p in lora_params.values()}
    base = [p for p in guidance.base.unet.parameters() if id(p) not in lora_ids]
    assert base and all(p.grad is None and not p.requires_grad for p in base)

    before_lora = {k: v.detach().clone() for k, v in lora_params.items()}
    before_base = [p.detach().clone() for p in base[:5]]
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    fn(images, _cameras(), 0, 10).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert any(not torch.equal(before_lora[k], v) for k, v in lora_params.items())
    assert all(torch.equal(b, p) for b, p in zip(before_base, base[:5]))


def test_pretrained_branch_ignores_the_adapters(twin_dirs):
    """With one shared UNet, eps_pretrain is the plain model whatever the LoRA holds."""
    guidance = load_guidance(twin_dirs / "base")
    fn = make_guidance_fn(guidance, PROMPT, mode="vsd")
    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 600])
    with torch.no_grad():
        before = fn.eps_pretrain(x, t, _cameras())
        _randomise_lora(fn)
        after = fn.eps_pretrain(x, t, _cameras())
        adapted = fn.eps_lora(x, t, _release_camera_of(_cameras()))
    torch.testing.assert_close(before, after)
    assert (adapted - after).abs().mean() > 1e-3


def test_timestep_schedule_follows_the_release(twin_dirs):
    fn = make_guidance_fn(load_guidance(twin_dirs / "base"), PROMPT, mode="vsd")
    # geodream-neus.yaml [15000, 0.98, 0.5, 15001] in Lightning steps: iteration 5,001 of 20,000
    assert fn.timestep_range(0, 20000) == (20, 980)
    assert fn.timestep_range(5000, 20000) == (20, 980)
    assert fn.timestep_range(5001, 20000) == (20, 500)
    sds = make_guidance_fn(load_guidance(twin_dirs / "base"), PROMPT, mode="sds")  # the DMTet geometry stage
    assert sds.settings.guidance_scale == 100.0 and sds.lora is None
    assert sds.timestep_range(1999, 5000) == (20, 980) and sds.timestep_range(2000, 5000) == (20, 500)


def test_single_file_loads_the_same_weights(tmp_path):
    unet, vae, text = twins_sd.save_single_file(tmp_path / "sd.safetensors", tmp_path / "config")
    model = load_model(tmp_path / "sd.safetensors", tmp_path / "config")
    for twin, loaded in ((unet, model.unet), (vae, model.vae), (text, model.text_encoder)):
        expected, got = twin.state_dict(), loaded.state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_renders_twice_the_vae_size_reach_it_as_2x2_boxes(twin_dirs, monkeypatch):
    """threestudio's get_latents: F.interpolate(rgb, (512, 512), bilinear, align_corners=False), which at exactly 2x
    is the mean of each 2 x 2 block (the texture pass's 1024 renders); no antialiasing filter beyond it."""
    guidance = load_guidance(twin_dirs / "base")
    size = guidance.image_size
    images = torch.rand(1, 3, 2 * size, 2 * size, generator=torch.Generator().manual_seed(0))
    seen = {}
    encode = guidance.base.vae.encode

    def spy(x):
        seen["x"] = x
        return encode(x)

    monkeypatch.setattr(guidance.base.vae, "encode", spy)
    guidance.encode_images(images, torch.Generator().manual_seed(0))
    box = (images[..., 0::2, 0::2] + images[..., 1::2, 0::2] + images[..., 0::2, 1::2] + images[..., 1::2, 1::2]) / 4
    torch.testing.assert_close(seen["x"], box * 2 - 1, atol=1e-6, rtol=0)
