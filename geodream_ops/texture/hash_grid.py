"""Multiresolution hash encoding (Instant-NGP), laid out exactly like tiny-cuda-nn's "HashGrid" so that one flat
parameter table means the same thing to both backends.

Level l has scale  s_l = base * b^l - 1  with  b = exp(log2(max / base) / (levels - 1)),  and  ceil(s_l) + 1
vertices per axis. A point x in [0, 1]^3 sits at  x * s_l + 0.5  in vertex units. Levels whose dense vertex count fits
in the table are indexed densely (x + y*res + z*res^2); finer ones hash the vertex with tiny-cuda-nn's primes
(1, 2654435761, 805459861), XOR-combined in 32-bit arithmetic. Every index is taken modulo the level's entry count,
which is min(2^log2_size, res^3 rounded up to 8). Features are interpolated trilinearly and concatenated level by
level: output [P, levels * features]."""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch

log = logging.getLogger("GeoDream")

PRIMES = (1, 2654435761, 805459861)


@dataclass(frozen=True)
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 4096

    @property
    def per_level_scale(self) -> float:
        return math.exp(math.log(self.max_resolution / self.base_resolution) / (self.n_levels - 1))

    def level_scale(self, level: int) -> float:
        # tiny-cuda-nn computes this in float32 from log2(per_level_scale); do the same so both agree on the grid.
        log2_scale = torch.tensor(math.log2(self.per_level_scale), dtype=torch.float32)
        return float(torch.exp2(level * log2_scale) * self.base_resolution - 1.0)

    def level_resolution(self, level: int) -> int:
        return math.ceil(self.level_scale(level)) + 1

    def level_sizes(self) -> list[int]:
        sizes = []
        for level in range(self.n_levels):
            dense = self.level_resolution(level) ** 3
            sizes.append(min(-(-dense // 8) * 8, 2 ** self.log2_hashmap_size))
        return sizes

    def tcnn_config(self) -> dict:
        return {"otype": "HashGrid", "n_levels": self.n_levels, "n_features_per_level": self.n_features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
                "per_level_scale": self.per_level_scale}

    def to_dict(self) -> dict:
        return asdict(self)


class WeightedRows(torch.autograd.Function):
    """out[..., m, f] = sum_k weights[..., m, k] * table[rows[..., k], f]: table [N, F], rows [..., K], weights
    [..., M, K] -> out [..., M, F]. Each row is gathered once however many weightings use it (the trilinear value
    and its three slopes: M = 4; a hash-grid level: M = 1).

    Gathers with index_select (measured on the CPU: ~5x advanced indexing's ``table[rows]``) and writes the
    table's gradient with one index_add_ into one zeroed table (the gradient's only whole-table pass); the weights'
    gradient, when asked for, re-gathers the rows rather than keeping them from the forward."""

    @staticmethod
    def forward(ctx, table, rows, weights):
        ctx.save_for_backward(table, rows, weights)
        return weights @ table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[1])

    @staticmethod
    def backward(ctx, grad):
        table, rows, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            # [..., K, F] per row; one weighting (a hash-grid level) is an outer product, faster than a matmul
            spread = weights.transpose(-1, -2) * grad if weights.shape[-2] == 1 else weights.transpose(-1, -2) @ grad
            spread = spread.reshape(-1, table.shape[1])
            grad_table = torch.zeros_like(table).index_add_(0, rows.reshape(-1), spread)
        if ctx.needs_input_grad[2]:
            gathered = table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[1])
            grad_weights = grad @ gathered.transpose(-1, -2)
        return grad_table, None, grad_weights


class HashGridEncoding(torch.nn.Module):
    """x in [0, 1]^3 [P, 3] -> features [P, levels * features]; tiny-cuda-nn when importable on CUDA, else PyTorch."""

    def __init__(self, config: HashGridConfig = HashGridConfig(), backend: str = "auto"):
        super().__init__()
        self.config = config
        sizes = config.level_sizes()
        offsets = [0]
        for size in sizes:
            offsets.append(offsets[-1] + size)
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        # Per level: the float32 scale, what each axis's vertex coordinate is multiplied by (dense: 1, res, res^2,
        # summed; hashed: the primes, XOR-ed) and the entry count. Dense levels are the coarse ones, so they come first.
        resolutions = [config.level_resolution(level) for level in range(config.n_levels)]
        self._dense_levels = sum(res ** 3 <= size for res, size in zip(resolutions, sizes))
        assert all(res ** 3 <= size for res, size in zip(resolutions[:self._dense_levels], sizes))
        assert all(size == 2 ** config.log2_hashmap_size for size in sizes[self._dense_levels:])
        self.register_buffer("_scales", torch.tensor([config.level_scale(level) for level in range(config.n_levels)]),
                             persistent=False)
        self.register_buffer("_multipliers", torch.tensor([(1, res, res * res) if level < self._dense_levels else PRIMES
                                                           for level, res in enumerate(resolutions)]), persistent=False)
        self.register_buffer("_sizes", torch.tensor(sizes), persistent=False)
        # tiny-cuda-nn's initialisation: uniform in +-1e-4, one flat vector of rows x features.
        self.params = torch.nn.Parameter(torch.empty(offsets[-1] * config.n_features_per_level).uniform_(-1e-4, 1e-4))
        self.backend = backend
        self._tcnn = None
        self._announced = None

    @property
    def n_output_dims(self) -> int:
        return self.config.n_levels * self.config.n_features_per_level

    def table(self) -> torch.Tensor:
        return self.params.view(-1, self.config.n_features_per_level)

    def resolved_backend(self, device: torch.device) -> str:
        if self.backend != "auto":
            return self.backend
        if device.type != "cuda":
            return "torch"
        try:
            import tinycudann  # noqa: F401
        except ImportError:
            return "torch"
        return "tcnn"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.resolved_backend(x.device)
        if backend != self._announced:
            log.info("GeoDream: hash grid on %s", "tiny-cuda-nn" if backend == "tcnn" else "pure PyTorch")
            self._announced = backend
        return self._forward_tcnn(x) if backend == "tcnn" else self._forward_torch(x)

    def _rows_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Table rows and trilinear weights [P, L, 8] of every level's cell corners (corner c at offset (c & 1,
        c >> 1 & 1, c >> 2 & 1)), with the module docstring's arithmetic: each axis's two vertex coordinates are
        multiplied once ([P, L, 3, 2]) and the 8 corners combined by broadcasting (rather than 8 x 3 products and
        XORs per level), and the weights are outer products of the axes' (1 - frac, frac)."""
        pos = x.float()[:, None, :] * self._scales[:, None] + 0.5  # [P, L, 3], vertex units
        base = pos.floor()
        frac = pos - base
        terms = (base.long()[..., None] + torch.arange(2, device=x.device)) * self._multipliers[..., None]
        d = self._dense_levels
        # Rows stay int64: index_add_ took ~6x as long with int32 indices on the CPU (measured). Hashed levels
        # hold 2^log2_size rows, so their index is the XOR's low bits, which masking each axis's term first gives
        # alike (masking commutes with XOR, and drops the bits above 32 too): no remainder over all 8 corners.
        dense = terms[:, :d]
        dense = ((dense[:, :, 0, None, None, :] + dense[:, :, 1, None, :, None] + dense[:, :, 2, :, None, None])
                 % self._sizes[:d, None, None, None])
        hashed = terms[:, d:] & (2 ** self.config.log2_hashmap_size - 1)
        hashed = hashed[:, :, 0, None, None, :] ^ hashed[:, :, 1, None, :, None] ^ hashed[:, :, 2, :, None, None]
        rows = torch.cat([dense, hashed], 1).flatten(2) + self.offsets[:-1, None]
        factors = torch.stack([1 - frac, frac], -1)  # [P, L, 3, 2]
        weights = factors[:, :, 0, None, None, :] * factors[:, :, 1, None, :, None] * factors[:, :, 2, :, None, None]
        return rows, weights.flatten(2)

    def _forward_torch(self, x: torch.Tensor) -> torch.Tensor:
        # All levels at once: one gather and, backwards, one scatter into the table (not a table-sized gradient per
        # level).
        rows, weights = self._rows_and_weights(x)
        return WeightedRows.apply(self.table(), rows, weights[..., None, :]).reshape(x.shape[0], -1)

    def _forward_tcnn(self, x: torch.Tensor) -> torch.Tensor:
        import tinycudann as tcnn

        if self._tcnn is None:
            # Kept out of the module tree: our ``params`` is the one table (and checkpoint entry) of both backends.
            object.__setattr__(self, "_tcnn", tcnn.Encoding(3, self.config.tcnn_config(), dtype=torch.float32).to(x.device))
        self._tcnn.params = self.params
        return self._tcnn(x).float()
