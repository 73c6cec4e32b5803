"""Tiny random twins of the Uni3D files, written in the published layouts and read back by the real loaders:
- the point encoder as a DeepSpeed-style ``model.pt`` ({"module": state dict}) of the same classes, with the
  tiny-size timm ViT shrunk to 2 blocks of width 32 and registered as an extra size;
- an open_clip CLIP registered as a model config (a 2-layer text tower) and saved as open_clip_pytorch_model.bin.
The tokenizer is open_clip's default, whose BPE vocabulary ships inside the package (works offline)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from geodream_pack.geodream_ops.uni3d import encoder as uni3d

TWIN_SIZE = "twin"
TWIN_CONFIG = uni3d.Uni3DConfig("eva02_tiny_patch14_224", width=32, depth=2,
                                timm_kwargs=dict(embed_dim=32, depth=2, num_heads=2, img_size=28),
                                num_group=16, group_size=8, encoder_dim=64, embed_dim=24)
TWIN_CLIP = "GeoDreamTwin-Text"
TWIN_CLIP_CONFIG = {
    "embed_dim": TWIN_CONFIG.embed_dim,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    "custom_text": True,
}


def register_twin_size(monkeypatch) -> None:
    monkeypatch.setitem(uni3d.SIZES, TWIN_SIZE, TWIN_CONFIG)


def save_uni3d_twin(path: Path, seed: int = 0) -> Path:
    """A random Uni3D twin saved as the release stores it. Weights are drawn wider than timm's initialisation
    (which leaves the output almost independent of the input) and BatchNorm statistics are randomised too, so a
    loader that dropped any tensor would give other numbers."""
    torch.manual_seed(seed)
    model = uni3d.Uni3D(TWIN_CONFIG)
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"module": model.state_dict(), "ds_version": "0.10.3", "global_steps": 1}, path)
    return path


def register_twin_clip(config_dir: Path) -> None:
    import open_clip

    if open_clip.get_model_config(TWIN_CLIP) is None:
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / f"{TWIN_CLIP}.json").write_text(json.dumps(TWIN_CLIP_CONFIG))
        open_clip.add_model_config(config_dir / f"{TWIN_CLIP}.json")


def save_clip_twin(path: Path, seed: int = 0, legacy_layout: bool = False) -> Path:
    """The twin CLIP's weights as open_clip saves them; ``legacy_layout`` writes the text tower at the top level,
    as older open_clip checkpoints of custom-text models do."""
    import open_clip

    torch.manual_seed(seed)
    state = open_clip.create_model(TWIN_CLIP).state_dict()
    if legacy_layout:
        state = {k.removeprefix("text."): v for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path
