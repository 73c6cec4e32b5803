"""f_3D: SparseNeuS's sparse cost-regularisation U-Net (SparseCostRegNet, lod0), over the voxels seen by >= 2 views.

Parameter names follow the released checkpoint (``sdf_network_lod0.sparse_costreg_net.*``); each block is a
3x3x3 sparse convolution (``net.0``, no bias), a batch norm (``net.1``, torchsparse's ``spnn.BatchNorm``: an
``nn.BatchNorm1d`` over the active voxels' features) and a ReLU. The release stored kernels in torchsparse's layout;
ours are spconv's (see prior_checkpoint.py for the conversion).

The release exports its volume with the network in training mode, so each batch norm normalises by the mean and
(biased) variance of its own level's active voxels; eval mode (``self.training`` False) uses the stored running
statistics instead. Both backends hand the batch norm the features of exactly the active sites (the dense path
reads its convolution back at them), so the statistics are the same on either."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .sparse_conv import SparseVolume, downsample_coords, downsample_shape, sparse_conv


class SparseConvWeight(nn.Module):
    """The kernel of one sparse convolution, [out, kx, ky, kz, in] (spconv's layout)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        nn.init.normal_(self.weight, std=math.sqrt(2.0 / (27 * in_channels)))


class SparseBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kind: str):
        super().__init__()
        self.kind = kind
        self.net = nn.ModuleList([SparseConvWeight(in_channels, out_channels), nn.BatchNorm1d(out_channels)])

    def forward(self, x: SparseVolume, out_coords: torch.Tensor, out_shape, backend: str) -> SparseVolume:
        features = sparse_conv(x, self.net[0].weight, self.kind, out_coords, backend)
        bn = self.net[1]
        # Running statistics are never updated: the prior is not trained.
        if self.training:
            mean, var = features.mean(0), features.var(0, unbiased=False)
        else:
            mean, var = bn.running_mean, bn.running_var
        features = (features - mean) * torch.rsqrt(var + bn.eps) * bn.weight + bn.bias
        return SparseVolume(out_coords, F.relu(features), tuple(out_shape))


class SparseCostRegNet(nn.Module):
    """Three stride-2 levels down (16, 32, 64 channels) and back up with additive skips; d_in -> d_out per voxel."""

    def __init__(self, d_in: int = 32, d_out: int = 16):
        super().__init__()
        self.conv0 = SparseBlock(d_in, d_out, "subm")
        self.conv1 = SparseBlock(d_out, 16, "down")
        self.conv2 = SparseBlock(16, 16, "subm")
        self.conv3 = SparseBlock(16, 32, "down")
        self.conv4 = SparseBlock(32, 32, "subm")
        self.conv5 = SparseBlock(32, 64, "down")
        self.conv6 = SparseBlock(64, 64, "subm")
        self.conv7 = SparseBlock(64, 32, "up")
        self.conv9 = SparseBlock(32, 16, "up")
        self.conv11 = SparseBlock(16, d_out, "up")

    @staticmethod
    def _same(block, x, backend):
        return block(x, x.coords, x.shape, backend)

    @staticmethod
    def _down(block, x, backend):
        return block(x, downsample_coords(x.coords), downsample_shape(x.shape), backend)

    @staticmethod
    def _up_add(block, x, skip, backend):
        up = block(x, skip.coords, skip.shape, backend)
        return SparseVolume(skip.coords, skip.features + up.features, skip.shape)

    def forward(self, x: SparseVolume, backend: str) -> torch.Tensor:
        """Sparse cost [P, d_in] -> regularised features [P, d_out] at the same voxels."""
        conv0 = self._same(self.conv0, x, backend)
        conv2 = self._same(self.conv2, self._down(self.conv1, conv0, backend), backend)
        conv4 = self._same(self.conv4, self._down(self.conv3, conv2, backend), backend)
        y = self._same(self.conv6, self._down(self.conv5, conv4, backend), backend)
        y = self._up_add(self.conv7, y, conv4, backend)
        y = self._up_add(self.conv9, y, conv2, backend)
        return self._up_add(self.conv11, y, conv0, backend).features
