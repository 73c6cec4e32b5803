"""Diffusers loads through accelerate (requirements.txt): weights go once into empty modules, and no load prints
diffusers' notice that accelerate is missing (six lines per model part before), nor its casting notice. bench/bench_loading.py has the
peak RAM of both ways."""
import logging

import diffusers.utils

from geodream_pack.geodream_ops.guidance.sd_guidance import load_guidance, load_model
from geodream_pack.geodream_ops.multiview.zero123plus import load_diffusers
from tests import twins_multiview, twins_sd


def test_zero123plus_and_sd_load_without_the_accelerate_notice(tmp_path, caplog, capfd):
    assert diffusers.utils.is_accelerate_available()
    twins_multiview.write_zero123plus(tmp_path / "zero123plus-v1.2")
    twins_sd.save_diffusers_folder(tmp_path / "sd")
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        model = load_diffusers(tmp_path / "zero123plus-v1.2", "v1.2")
        sd = load_model(tmp_path / "sd")
        load_guidance(tmp_path / "sd", device="cpu", half=False)  # as the guidance loader node does on the CPU
    printed = capfd.readouterr()
    said = caplog.text + printed.out + printed.err
    assert "accelerate" not in said.lower(), said[-2000:]
    assert "Casting directly" not in said, said[-2000:]  # no dtype given where nothing is cast
    # Loaded, not left on the meta device that accelerate's empty-weights path starts from.
    for module in (*model.modules(), sd.unet, sd.vae, sd.text_encoder):
        assert all(p.device.type == "cpu" for p in module.parameters())
