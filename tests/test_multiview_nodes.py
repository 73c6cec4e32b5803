"""The multi-view nodes end to end on tiny twins saved in the published formats and loaded by the real loader
nodes: right number of views, shapes, value range, cameras, seeds; clear errors for missing files and conditions."""
import json
import os
import shutil

import numpy as np

import pytest
import torch
from PIL import Image

from geodream_pack.geodream_ops import cameras
from geodream_pack.geodream_ops.multiview import mv_files
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.nodes import host
from geodream_pack.nodes.multiview import GeoDreamLoadMVDream, GeoDreamLoadZero123Plus, GeoDreamMultiViewGenerate
from headless.run import run_workflow
from tests import twins_multiview as tw

STEPS = 2



@pytest.fixture(scope="module")
def twin_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mv_twins")
    return {"zero123plus-v1.2": tw.write_zero123plus(root / "zero123plus-v1.2"),
            "mvdream.pt": tw.write_mvdream_single_file(root / "mvdream.pt"),
            "mvdream-diffusers": tw.write_mvdream_diffusers(root / "mvdream-diffusers")}


def _install(pack_dirs, twin_files, name, kind):
    (pack_dirs["models"] / kind).mkdir(exist_ok=True)
    os.symlink(twin_files[name], pack_dirs["models"] / kind / name)


@pytest.fixture
def zero123plus(pack_dirs, twin_files):
    _install(pack_dirs, twin_files, "zero123plus-v1.2", "diffusers")
    return GeoDreamLoadZero123Plus().load("zero123plus-v1.2", "auto")[0]


def _object_image():
    image = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 48, 40)
    mask[:, 10:30, 8:30] = 0
    return image, mask


def _generate(model, **overrides):
    args = dict(prompt="", negative_prompt="", steps=STEPS, guidance=0.0, seed=7)
    args.update(overrides)
    return GeoDreamMultiViewGenerate().generate(model, **args)


def test_zero123plus_generates_six_views_at_the_v12_rig(zero123plus):
    assert zero123plus.version == "v1.2" and zero123plus.num_views == 6
    image, mask = _object_image()
    views, rig, _ = _generate(zero123plus, image=image, mask=mask)
    assert views.shape == (6, tw.TILE, tw.TILE, 3) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1 and views.std() > 0
    # The published v1.2 table: azimuths 30..330 in steps of 60 from the input view, elevations 20/-10, fov 30.
    assert torch.allclose(rig.azimuth_deg, torch.tensor([30.0, 90, 150, 210, 270, 330]), atol=1e-4)
    assert torch.allclose(rig.elevation_deg, torch.tensor([20.0, -10, 20, -10, 20, -10]), atol=1e-4)
    assert torch.allclose(rig.fovy_deg, torch.full((6,), 30.0))
    again = _generate(zero123plus, image=image, mask=mask)[0]
    assert torch.equal(views, again)
    other_seed = _generate(zero123plus, image=image, mask=mask, seed=8)[0]
    other_image = _generate(zero123plus, image=1 - image, mask=mask)[0]
    # Same inputs give bit-identical views; the seed and the condition image both move them.
    assert (other_seed - views).abs().max() > 1e-2 and (other_image - views).abs().max() > 1e-4


def test_zero123plus_needs_an_image_and_honours_interrupts(zero123plus):
    with pytest.raises(GeoDreamError, match="Zero123\\+\\+ needs an image"):
        _generate(zero123plus)
    image, mask = _object_image()
    host.request_interrupt()
    with pytest.raises(host.Interrupted):
        _generate(zero123plus, image=image, mask=mask)
    assert all(p.device.type == "cpu" for m in zero123plus.modules() for p in m.parameters())


@pytest.mark.parametrize("name,kind", [("mvdream.pt", "checkpoints"), ("mvdream-diffusers", "diffusers")])
def test_mvdream_generates_four_views_from_either_format(pack_dirs, twin_files, name, kind):
    _install(pack_dirs, twin_files, name, kind)
    choice = f"{kind}/{name}"
    assert choice in GeoDreamLoadMVDream.INPUT_TYPES()["required"]["model"][0]
    model = GeoDreamLoadMVDream().load(choice, tw.MV_RESOLUTION)[0]
    views, rig, _ = _generate(model, prompt="a red owl", elevation=20.0)
    assert views.shape == (4, tw.MV_RESOLUTION, tw.MV_RESOLUTION, 3)
    assert views.min() >= 0 and views.max() <= 1 and views.std() > 0
    assert torch.allclose(rig.c2w, cameras.mvdream_rig(20.0).c2w)
    assert torch.equal(views, _generate(model, prompt="a red owl", elevation=20.0)[0])
    assert (views - _generate(model, prompt="a red owl", elevation=20.0, seed=8)[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="MVDream needs a prompt"):
        _generate(model, prompt="  ")
    with pytest.raises(ValueError, match="multiple of 4"):  # the twin's VAE halves once and its UNet once
        GeoDreamLoadMVDream().load(choice, 18)


def test_both_mvdream_formats_hold_the_same_unet(pack_dirs, twin_files):
    _install(pack_dirs, twin_files, "mvdream.pt", "checkpoints")
    _install(pack_dirs, twin_files, "mvdream-diffusers", "diffusers")
    single = GeoDreamLoadMVDream().load("checkpoints/mvdream.pt", tw.MV_RESOLUTION)[0]
    port = GeoDreamLoadMVDream().load("diffusers/mvdream-diffusers", tw.MV_RESOLUTION)[0]
    for key, value in single.unet.state_dict().items():
        assert torch.equal(port.unet.state_dict()[key], value), key


def test_loader_errors_name_the_folder_and_expected_files(pack_dirs, twin_files):
    incomplete = pack_dirs["models"] / "diffusers" / "zero123plus-v1.1"
    shutil.copytree(twin_files["zero123plus-v1.2"], incomplete)
    shutil.rmtree(incomplete / "vision_encoder")
    (incomplete / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(mv_files.ModelFilesError) as error:
        GeoDreamLoadZero123Plus().load("zero123plus-v1.1", "auto")
    message = str(error.value)
    assert str(incomplete) in message
    for expected in ("vision_encoder/config.json", "unet/diffusion_pytorch_model.safetensors", "feature_extractor_vae"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match=r"'absent' was not found in .*models/diffusers/"):
        GeoDreamLoadZero123Plus().load("absent", "v1.2")
    with pytest.raises(ValueError, match="cannot tell the Zero123\\+\\+ version"):
        GeoDreamLoadZero123Plus().load("my-model", "auto")
    port = pack_dirs["models"] / "diffusers" / "mvdream-port"
    shutil.copytree(twin_files["mvdream-diffusers"], port)
    (port / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(mv_files.ModelFilesError, match=rf"{port}.*missing: tokenizer/merges.txt\."):
        GeoDreamLoadMVDream().load("diffusers/mvdream-port", 256)
    # A single file without MVDream's parts (e.g. a plain SD checkpoint) names what it lacks.
    (pack_dirs["models"] / "checkpoints").mkdir()
    torch.save({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, pack_dirs["models"] / "checkpoints" / "sd.pt")
    with pytest.raises(GeoDreamError, match=r"sd\.pt' is not MVDream's .*holds a Stable Diffusion single-file "
                                            r"checkpoint \(no .*camera_embed.*models/checkpoints/"):
        GeoDreamLoadMVDream().load("checkpoints/sd.pt", 256)


def test_workflows_through_the_runner_swap_only_the_loader(pack_dirs, twin_files, tmp_path):
    """LoadImage (RGBA) -> Zero123++ and prompt -> MVDream through the headless runner: same generate node, same
    downstream; the views and their cameras land on disk."""
    _install(pack_dirs, twin_files, "zero123plus-v1.2", "diffusers")
    _install(pack_dirs, twin_files, "mvdream.pt", "checkpoints")
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[8:30, 12:28] = (200, 40, 40, 255)
    Image.fromarray(rgba, "RGBA").save(pack_dirs["input"] / "object.png")
    generate = {"class_type": "GeoDreamMultiViewGenerate",
                "inputs": {"mv_model": ["1", 0], "prompt": "a red owl", "negative_prompt": "", "steps": 1,
                           "guidance": 0.0, "seed": 3, "image": ["0", 0], "mask": ["0", 1]}}
    downstream = {"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "mv/views"}},
                  "4": {"class_type": "GeoDreamSaveCameras", "inputs": {"cameras": ["2", 1], "filename_prefix": "mv/cams"}}}
    loaders = {"zero123plus": {"class_type": "GeoDreamLoadZero123Plus", "inputs": {"folder": "zero123plus-v1.2", "version": "auto"}},
               "mvdream": {"class_type": "GeoDreamLoadMVDream", "inputs": {"model": "checkpoints/mvdream.pt",
                                                                           "resolution": tw.MV_RESOLUTION}}}
    for name, views in (("zero123plus", 6), ("mvdream", 4)):
        api = {"0": {"class_type": "LoadImage", "inputs": {"image": "object.png"}}, "1": loaders[name], "2": generate, **downstream}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(api))
        written = run_workflow(path, log=lambda *a: None)
        pngs, records = [w for w in written if w.endswith(".png")], [w for w in written if w.endswith(".json")]
        assert len(pngs) == views and len(records) == 1
        assert len(json.loads(open(records[0]).read())["c2w"]) == views


def test_release_sampler_settings_and_precisions_are_the_defaults(zero123plus, pack_dirs, twin_files, monkeypatch):
    """steps = guidance = 0 run each model as GeoDream's release did (t2i_single.py: DDIM 50, CFG 10, fp32;
    img_to_6mv.py: 75 steps, CFG 4, fp16)."""
    from geodream_pack.nodes import multiview

    _install(pack_dirs, twin_files, "mvdream.pt", "checkpoints")
    mvdream = GeoDreamLoadMVDream().load("checkpoints/mvdream.pt", tw.MV_RESOLUTION)[0]
    calls = []

    def record(model, size):
        def generate(*args):
            calls.append((model.kind, args[-4], args[-3], next(model.modules()[0].parameters()).dtype))
            return torch.rand(model.num_views, size, size, 3)
        return generate

    monkeypatch.setattr(zero123plus, "generate", record(zero123plus, tw.TILE))
    monkeypatch.setattr(mvdream, "generate", record(mvdream, tw.MV_RESOLUTION))
    image, mask = _object_image()
    _generate(zero123plus, image=image, mask=mask, steps=0)
    _generate(mvdream, prompt="a red owl", steps=0)
    assert calls == [("zero123plus", 75, 4.0, torch.float32), ("mvdream", 50, 10.0, torch.float32)]  # CPU: fp32
    monkeypatch.setattr(host, "device", lambda: torch.device("cuda"))
    assert multiview.model_dtype("mvdream", "auto") == torch.float32
    assert multiview.model_dtype("zero123plus", "auto") == torch.float16
    assert multiview.model_dtype("mvdream", "fp16") == torch.float16


def test_mvdream_runs_ldms_timesteps(pack_dirs, twin_files):
    """7 steps do not divide 1000: ldm's DDIM runs 995, 853, ..., 1 (eight: range(0, 1000, 142) + 1), and so does
    ours."""
    _install(pack_dirs, twin_files, "mvdream.pt", "checkpoints")
    model = GeoDreamLoadMVDream().load("checkpoints/mvdream.pt", tw.MV_RESOLUTION)[0]
    seen = []
    forward = model.unet.forward

    def spy(x, t, *args, **kwargs):
        seen.append(int(t))
        return forward(x, t, *args, **kwargs)

    model.unet.forward = spy
    model.generate("a red owl", "", cameras.mvdream_rig(15.0), 7, 10.0, 0)
    assert seen == [t + 1 for t in range(0, 1000, 142)][::-1] and len(seen) == 8
