"""The camera-conditioned LoRA of Variational Score Distillation (ProlificDreamer): rank-4 adapters on every
attention projection (q, k, v, out) of a UNet, plus an embedding of the camera-to-world matrix added to the
timestep embedding (through the UNet's class-embedding slot, as threestudio does). Only these are trained; the
UNet's own weights stay frozen, and with the adapters switched off it is the pretrained model again."""
from __future__ import annotations

from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import TimestepEmbedding

PROJECTIONS = ("to_q", "to_k", "to_v")


class LoRAPair(torch.nn.Module):
    """down: in -> rank (normal, std 1/rank), up: rank -> out (zeros), so a fresh adapter changes nothing."""

    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.down = torch.nn.Linear(in_features, rank, bias=False)
        self.up = torch.nn.Linear(rank, out_features, bias=False)
        torch.nn.init.normal_(self.down.weight, std=1.0 / rank)
        torch.nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype)))


class LoRALinear(torch.nn.Module):
    def __init__(self, base: torch.nn.Linear, lora: LoRAPair):
        super().__init__()
        self.base, self.lora, self.enabled = base, lora, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        return y + self.lora(x).to(y.dtype) if self.enabled else y


class CameraLoRA(torch.nn.Module):
    """Installs itself into ``unet`` (whose weights it freezes); ``parameters()`` are exactly the trainable ones."""

    def __init__(self, unet, rank: int = 4):
        super().__init__()
        unet.requires_grad_(False)
        self.camera_embedding = TimestepEmbedding(16, unet.time_embedding.linear_1.out_features)
        self.adapters = torch.nn.ModuleList()
        self._wrapped: list[LoRALinear] = []
        for module in list(unet.modules()):
            if not isinstance(module, Attention):
                continue
            targets = [(module, name) for name in PROJECTIONS] + [(module.to_out, "0")]
            for parent, name in targets:
                base = getattr(parent, name) if name != "0" else parent[0]
                if isinstance(base, LoRALinear):  # a newer LoRA replaces an older one on a shared UNet
                    base = base.base
                pair = LoRAPair(base.in_features, base.out_features, rank)
                wrapped = LoRALinear(base, pair)
                if name == "0":
                    parent[0] = wrapped
                else:
                    setattr(parent, name, wrapped)
                self.adapters.append(pair)
                self._wrapped.append(wrapped)
        self.__dict__["unet"] = unet  # not a submodule: the UNet is frozen and saved elsewhere

    @contextmanager
    def active(self):
        """The adapted model: adapters on, camera embedding in the class-embedding slot; restored afterwards."""
        for w in self._wrapped:
            w.enabled = True
        previous, self.unet.class_embedding = self.unet.class_embedding, self.camera_embedding
        try:
            yield self.unet
        finally:
            self.unet.class_embedding = previous
            for w in self._wrapped:
                w.enabled = False

    def forward(self, latents, timesteps, text_embeddings, camera: torch.Tensor) -> torch.Tensor:
        """UNet output with the adapters; ``camera`` [B, 4, 4] camera-to-world (zeros: no camera condition)."""
        with self.active() as unet:
            return unet(latents, timesteps, encoder_hidden_states=text_embeddings,
                        class_labels=camera.reshape(camera.shape[0], 16).to(self.camera_embedding.linear_1.weight)).sample
