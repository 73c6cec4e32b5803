"""MVDream's multi-view UNet: the Stable Diffusion 2.1-base UNet whose self-attention runs across the N views of
one object, with a camera embedding MLP added to the timestep embedding (Shi et al., 2023, "MVDream").

Module and parameter names follow the published weights exactly, so both load with ``strict=True``:
``model.diffusion_model.*`` of the single-file ``sd-v2.1-base-4view.pt`` and ``unet/`` of the diffusers-format
port (ashawkey/mvdream_diffusers), which keeps the same names. That is why the layout below reads like the
original latent-diffusion UNet (input_blocks / middle_block / output_blocks, in_layers / emb_layers / out_layers)
rather than like diffusers' UNet2DConditionModel.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

# MVDream fixes 64 channels per attention head (its config notes this is needed for flash attention).
HEAD_CHANNELS = 64


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim], cosines first as in latent diffusion."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class GroupNorm32(nn.GroupNorm):
    """Group norm computed in float32 whatever the weights' dtype (fp16 group statistics overflow)."""

    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).type(x.dtype)


class Attention(nn.Module):
    """Multi-head attention over PyTorch SDPA; self-attention when no context is given."""

    def __init__(self, query_dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        inner = heads * HEAD_CHANNELS
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = (t.reshape(b, t.shape[1], self.heads, HEAD_CHANNELS).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, x.shape[1], -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class MultiViewTransformerBlock(nn.Module):
    """Self-attention over the tokens of all N views together (the multi-view part), then per-view text
    cross-attention and feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int):
        super().__init__()
        self.attn1 = Attention(dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context, num_views: int):
        bf, tokens, channels = x.shape
        joint = x.reshape(bf // num_views, num_views * tokens, channels)
        joint = self.attn1(self.norm1(joint)) + joint
        x = joint.reshape(bf, tokens, channels)
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class MultiViewTransformer(nn.Module):
    """MVDream's SpatialTransformer3D with linear in/out projections, as in SD 2.x."""

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int):
        super().__init__()
        inner = heads * HEAD_CHANNELS
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(MultiViewTransformerBlock(inner, heads, context_dim) for _ in range(depth))
        # The published layer is declared Linear(channels, inner); the two are equal in every SD 2.x UNet.
        self.proj_out = nn.Linear(channels, inner)

    def forward(self, x, context, num_views: int):
        b, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, context, num_views)
        return self.proj_out(tokens).reshape(b, h, w, c).permute(0, 3, 1, 2) + x


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(GroupNorm32(32, out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb).type(x.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    """Routes the timestep embedding to residual blocks and the text context to transformers."""

    def forward(self, x, emb, context, num_views: int):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, MultiViewTransformer):
                x = layer(x, context, num_views)
            else:
                x = layer(x)
        return x


class MultiViewUNet(nn.Module):
    """eps(x_t, t, text, camera) for a batch of B objects x N views laid out as [(B N), C, H, W].

    ``num_views=1`` turns cross-view attention off: each image is then denoised on its own, exactly as by the SD 2.1
    UNet it was fine-tuned from (plus the camera embedding, when a camera is given)."""

    def __init__(self, in_channels=4, out_channels=4, model_channels=320, channel_mult=(1, 2, 4, 4), num_res_blocks=2,
                 attention_resolutions=(4, 2, 1), transformer_depth=1, context_dim=1024, camera_dim: int | None = 16):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, model_channels=model_channels,
                           channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                           attention_resolutions=tuple(attention_resolutions), transformer_depth=transformer_depth,
                           context_dim=context_dim, camera_dim=camera_dim)
        emb = model_channels * 4
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        if camera_dim is not None:
            self.camera_embed = nn.Sequential(nn.Linear(camera_dim, emb), nn.SiLU(), nn.Linear(emb, emb))

        def transformer(ch):
            return MultiViewTransformer(ch, ch // HEAD_CHANNELS, transformer_depth, context_dim)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        skip_channels, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb), transformer(ch), ResBlock(ch, emb))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1))

    @property
    def dtype(self) -> torch.dtype:
        return self.time_embed[0].weight.dtype

    def forward(self, x, timesteps, context, camera=None, num_views: int = 1):
        if x.shape[0] % num_views:
            raise ValueError(f"batch of {x.shape[0]} images is not a whole number of {num_views}-view sets")
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.dtype))
        if camera is not None:
            emb = emb + self.camera_embed(camera.to(self.dtype))
        h, skips = x.to(self.dtype), []
        context = context.to(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb, context, num_views)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_views)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, num_views)
        return self.out(h).to(x.dtype)


def config_from_state_dict(state: dict[str, torch.Tensor]) -> dict:
    """The constructor arguments of the UNet that ``state`` (un-prefixed UNet keys) was saved from, read off the
    shapes, so the published file and small twins load through one path."""
    model_channels = state["input_blocks.0.0.weight"].shape[0]
    # Every input block holding a residual block, in order; level boundaries are where the Downsample blocks sit.
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    mults, res_per_level, attention, level_blocks, ds = [], 0, set(), 0, 1
    for index in blocks[1:]:
        if f"input_blocks.{index}.0.op.weight" in state:
            res_per_level, level_blocks, ds = level_blocks, 0, ds * 2
            continue
        if level_blocks == 0:
            mults.append(state[f"input_blocks.{index}.0.in_layers.2.weight"].shape[0] // model_channels)
        level_blocks += 1
        if f"input_blocks.{index}.1.proj_in.weight" in state:
            attention.add(ds)
    res_per_level = res_per_level or level_blocks
    depth = len({k.split(".")[3] for k in state if k.startswith("middle_block.1.transformer_blocks.")})
    camera = state.get("camera_embed.0.weight")
    return dict(in_channels=state["input_blocks.0.0.weight"].shape[1], out_channels=state["out.2.weight"].shape[0],
                model_channels=model_channels, channel_mult=tuple(mults), num_res_blocks=res_per_level,
                attention_resolutions=tuple(sorted(attention, reverse=True)), transformer_depth=depth,
                context_dim=state["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1],
                camera_dim=None if camera is None else camera.shape[1])
