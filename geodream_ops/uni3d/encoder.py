"""The Uni3D point-cloud encoder (Zhou et al. 2023), which embeds a coloured point cloud into the CLIP space of
open_clip's EVA02-E-14-plus: patches (FPS centres + kNN groups) -> a PointNet patch embedding -> the blocks of an
EVA ViT built by timm -> the class token projected to 1024-d.

Module and parameter names follow the published checkpoints (BAAI/Uni3D, ``modelzoo/uni3d-*/model.pt``: a DeepSpeed
file whose ``module`` entry holds ``logit_scale`` and ``point_encoder.*``), so they load with ``strict=True``. The
whole timm ViT is built, as the reference does, because its unused image parts (patch_embed, pos_embed, cls_token,
head) are in the checkpoint too."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import model_files
from ..errors import GeoDreamError
from .point_groups import farthest_point_sample, gather, knn

log = logging.getLogger("GeoDream")


@dataclass(frozen=True)
class Uni3DConfig:
    """One Uni3D size. ``width`` and ``depth`` repeat what ``timm_model`` builds; the loader recognises a checkpoint's
    size by them. ``num_group``/``group_size`` are not stored in the weights: Uni3D trains and evaluates with 512
    patches of 64 points."""
    timm_model: str
    width: int
    depth: int
    timm_kwargs: dict = field(default_factory=dict)
    num_group: int = 512
    group_size: int = 64
    encoder_dim: int = 512  # --pc-encoder-dim
    embed_dim: int = 1024  # EVA02-E-14-plus's CLIP space


# The timm models of the reference's scripts/inference.sh (default pretrained tag of each, which decides the head).
SIZES = {
    "tiny": Uni3DConfig("eva02_tiny_patch14_224", 192, 12),
    "small": Uni3DConfig("eva02_small_patch14_224", 384, 12),
    "base": Uni3DConfig("eva02_base_patch14_448", 768, 12),
    "large": Uni3DConfig("eva02_large_patch14_448", 1024, 24),
    "giant": Uni3DConfig("eva_giant_patch14_560", 1408, 40),
}


class PatchEmbedding(nn.Module):
    """PointNet on each patch: a shared per-point MLP, the patch maximum appended to every point, a second MLP, and
    the maximum again. Input [B, G, K, 6] (xyz relative to the centre, rgb) -> [B, G, encoder_dim]."""

    def __init__(self, encoder_dim: int):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(6, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
                                         nn.Conv1d(512, encoder_dim, 1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        batch, groups, size, _ = patches.shape
        feature = self.first_conv(patches.reshape(batch * groups, size, 6).transpose(1, 2))
        pooled = feature.amax(dim=2, keepdim=True).expand(-1, -1, size)
        feature = self.second_conv(torch.cat([pooled, feature], dim=1))
        return feature.amax(dim=2).reshape(batch, groups, -1)


class PointEncoder(nn.Module):
    def __init__(self, config: Uni3DConfig):
        super().__init__()
        import timm

        self.config = config
        self.encoder = PatchEmbedding(config.encoder_dim)
        self.encoder2trans = nn.Linear(config.encoder_dim, config.width)
        self.trans2embed = nn.Linear(config.width, config.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.width))
        self.cls_pos = nn.Parameter(torch.randn(1, 1, config.width))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, config.width))
        self.visual = timm.create_model(config.timm_model, **config.timm_kwargs)

    def forward(self, xyz: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
        config = self.config
        centres = gather(xyz, farthest_point_sample(xyz, config.num_group))
        members = knn(xyz, centres, config.group_size)
        patches = torch.cat([gather(xyz, members) - centres[:, :, None], gather(rgb, members)], dim=-1)
        tokens = self.encoder2trans(self.encoder(patches))
        batch = tokens.shape[0]
        x = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        x = x + torch.cat([self.cls_pos.expand(batch, -1, -1), self.pos_embed(centres)], dim=1)
        x = self.visual.pos_drop(x)
        # The reference calls the blocks without the image rotary embedding: token order carries no position here.
        for block in self.visual.blocks:
            x = block(x)
        x = self.visual.fc_norm(self.visual.norm(x[:, 0]))
        return self.trans2embed(x)


class Uni3D(nn.Module):
    def __init__(self, config: Uni3DConfig):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
        self.point_encoder = PointEncoder(config)

    @property
    def config(self) -> Uni3DConfig:
        return self.point_encoder.config

    def encode(self, points: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings [B, embed_dim] of point clouds [B, N, 6] (normalised xyz, rgb in [0, 1])."""
        if points.ndim != 3 or points.shape[-1] != 6:
            raise ValueError(f"point clouds must be [B, N, 6] (xyz, rgb), got {tuple(points.shape)}")
        needed = max(self.config.num_group, self.config.group_size)
        if points.shape[1] < needed:
            raise ValueError(f"Uni3D needs at least {needed} points, got {points.shape[1]}")
        dtype = next(self.parameters()).dtype
        points = points.to(dtype)
        embedding = self.point_encoder(points[..., :3].contiguous(), points[..., 3:].contiguous())
        return nn.functional.normalize(embedding.float(), dim=-1)


UNI3D_FILE = "a Uni3D checkpoint (BAAI/Uni3D modelzoo/uni3d-*/model.pt)"
UNI3D_FIX = ("Pick one of BAAI/Uni3D's modelzoo/uni3d-g (or -l, -b) model.pt files in models/geodream/; if that is the "
             "file, download it again from Hugging Face BAAI/Uni3D.")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a released Uni3D file: ``module`` of a DeepSpeed checkpoint (or ``state_dict``, or a plain
    dict; a .safetensors file), with any ``module.`` prefix of distributed training removed. DeepSpeed pickles its
    config beside the weights, so the release (a trusted file) may be unpickled in full."""
    return model_files.read_state_dict(path, UNI3D_FILE, UNI3D_FIX, required=["point_encoder.cls_token"],
                                       trusted_pickle=True)


def detect_size(state: dict[str, torch.Tensor]) -> str:
    width = state["point_encoder.cls_token"].shape[-1]
    depth = len({k.split(".")[3] for k in state if k.startswith("point_encoder.visual.blocks.")})
    for name, config in SIZES.items():
        if (config.width, config.depth) == (width, depth):
            return name
    known = ", ".join(f"{n} ({c.width} wide, {c.depth} blocks)" for n, c in SIZES.items())
    raise GeoDreamError(f"GeoDream: a Uni3D encoder {width} wide with {depth} blocks is none of the released sizes: "
                        f"{known}. {UNI3D_FIX}")


def load_uni3d(path, device="cpu", dtype=torch.float32) -> Uni3D:
    """A released Uni3D checkpoint (any size; recognised from its shapes), in eval mode."""
    state = read_state_dict(path)
    size = detect_size(state)
    with torch.device(device):  # random initialisation of a billion parameters is much faster on a GPU
        model = Uni3D(SIZES[size])
    model_files.load_weights(model, state, path, UNI3D_FILE, UNI3D_FIX)
    log.info("GeoDream: Uni3D-%s loaded from %s", size, Path(path).name)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
