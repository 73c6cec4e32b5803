"""f_2D: SparseNeuS's 2D feature pyramid, fused to 56 channels per pixel (One-2-3-45 release, lod0).

Parameter names and shapes follow the released checkpoint's ``pyramid_feature_network`` section. Its norm layers
were inplace_abn's InPlaceABN (batch norm + leaky ReLU 0.01, no ``num_batches_tracked``); ``InPlaceABNForward``
computes InPlaceABN's forward in plain PyTorch with the same keys, so the pack needs no CUDA extension."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_CHANNELS = 56  # 32 (1/4 scale) + 16 (1/2 scale) + 8 (full scale)


class InPlaceABNForward(nn.Module):
    """The forward of inplace_abn's InPlaceABN (leaky ReLU 0.01, eps 1e-5) on [N, C, ...] inputs:

        y = leaky_relu((x - mean) / sqrt(var + eps) * (|gamma| + eps) + beta, 0.01)

    InPlaceABN scales by |gamma| + eps, never by gamma (src/inplace_abn_cpu.cpp forward_cpu and the CUDA kernels;
    its backward flips the gradient's sign instead, so a trained gamma may be stored negative). In training mode
    (``self.training``) mean and var are the batch's, per channel over N and every spatial position, var biased
    (``statistics_cpu``); in eval mode they are the stored running statistics. The release exports its volume in
    training mode. Running statistics are never updated here: the prior is not trained."""

    def __init__(self, channels: int, eps: float = 1e-5, slope: float = 0.01):
        super().__init__()
        self.eps, self.slope = eps, slope
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        scale = self.weight.abs() + self.eps
        if self.training:
            x = F.batch_norm(x, None, None, scale, self.bias, True, 0.0, self.eps)
        else:
            x = F.batch_norm(x, self.running_mean, self.running_var, scale, self.bias, False, 0.0, self.eps)
        return F.leaky_relu(x, self.slope)


class ConvBnAct(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        self.bn = InPlaceABNForward(out_channels)

    def forward(self, x):
        return self.bn(self.conv(x))


class FeatureNet(nn.Module):
    """Three-level FPN: features at 1/4, 1/2 and full resolution (32, 16, 8 channels)."""

    def __init__(self):
        super().__init__()
        self.conv0 = nn.Sequential(ConvBnAct(3, 8), ConvBnAct(8, 8))
        self.conv1 = nn.Sequential(ConvBnAct(8, 16, 5, 2, 2), ConvBnAct(16, 16), ConvBnAct(16, 16))
        self.conv2 = nn.Sequential(ConvBnAct(16, 32, 5, 2, 2), ConvBnAct(32, 32), ConvBnAct(32, 32))
        self.toplayer = nn.Conv2d(32, 32, 1)
        self.lat1 = nn.Conv2d(16, 32, 1)
        self.lat0 = nn.Conv2d(8, 32, 1)
        self.smooth1 = nn.Conv2d(32, 16, 3, padding=1)
        self.smooth0 = nn.Conv2d(32, 8, 3, padding=1)

    @staticmethod
    def _upsample(x, factor):
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, H, W] in 0..1 (H, W multiples of 4) -> fused features [N, 56, H, W]."""
        c0 = self.conv0(images)
        c1 = self.conv1(c0)
        c2 = self.conv2(c1)
        f2 = self.toplayer(c2)
        f1 = self._upsample(f2, 2) + self.lat1(c1)
        f0 = self._upsample(f1, 2) + self.lat0(c0)
        # Coarse levels are brought to full resolution and stacked: the release found the coarse level alone too
        # hard to optimise.
        return torch.cat([self._upsample(f2, 4), self._upsample(self.smooth1(f1), 2), self.smooth0(f0)], dim=1)
