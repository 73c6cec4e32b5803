"""The pure-PyTorch hash grid against a slow per-point loop of tiny-cuda-nn's indexing and trilinear weights."""
import math

import pytest
import torch

from geodream_pack.geodream_ops.texture.hash_grid import PRIMES, HashGridConfig, HashGridEncoding

UINT32 = 0xFFFFFFFF  # tiny-cuda-nn hashes in 32-bit unsigned arithmetic

SMALL = HashGridConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4, max_resolution=32)


def slow_encode(config: HashGridConfig, table: torch.Tensor, point) -> list[float]:
    """Plain Python: float32 level scales, dense rows below the table size, XOR-of-primes hashing above it."""
    out, offset = [], 0
    growth = math.log2((config.max_resolution / config.base_resolution) ** (1 / (config.n_levels - 1)))
    for level in range(config.n_levels):
        scale = float(torch.tensor(2.0, dtype=torch.float32) ** torch.tensor(level * growth, dtype=torch.float32)
                      * config.base_resolution - 1)
        res = math.ceil(scale) + 1
        size = min(int(math.ceil(res ** 3 / 8) * 8), 2 ** config.log2_hashmap_size)
        pos = [float(torch.tensor(p, dtype=torch.float32) * scale + 0.5) for p in point]
        cell = [math.floor(p) for p in pos]
        frac = [p - c for p, c in zip(pos, cell)]
        acc = [0.0] * config.n_features_per_level
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    v = (cell[0] + dx, cell[1] + dy, cell[2] + dz)
                    if res ** 3 <= size:
                        row = v[0] + v[1] * res + v[2] * res * res
                    else:
                        row = (v[0] * 1) ^ ((v[1] * 2654435761) % 2 ** 32) ^ ((v[2] * 805459861) % 2 ** 32)
                    row %= size
                    w = ((frac[0] if dx else 1 - frac[0]) * (frac[1] if dy else 1 - frac[1])
                         * (frac[2] if dz else 1 - frac[2]))
                    for f in range(config.n_features_per_level):
                        acc[f] += w * float(table[offset + row, f])
        out += acc
        offset += size
    return out


def vertex_index(corner: torch.Tensor, resolution: int, size: int) -> torch.Tensor:
    """Table row (within a level) of integer vertices [..., 3], vertex by vertex: dense when the level fits, hashed
    otherwise (the encoding computes the same rows axis by axis)."""
    corner = corner.long()
    if resolution ** 3 <= size:
        index = corner[..., 0] + corner[..., 1] * resolution + corner[..., 2] * resolution * resolution
    else:
        index = torch.zeros_like(corner[..., 0])
        for axis, prime in enumerate(PRIMES):
            index = index ^ ((corner[..., axis] * prime) & UINT32)
    return index % size


def test_matches_slow_reference_dense_and_hashed_levels():
    torch.manual_seed(0)
    enc = HashGridEncoding(SMALL, backend="torch")
    sizes = SMALL.level_sizes()
    assert sizes[0] < 2 ** 8 and sizes[-1] == 2 ** 8  # the test covers a dense and a hashed level
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    points = torch.rand(40, 3)
    points[0] = torch.tensor([0.0, 0.0, 0.0])
    points[1] = torch.tensor([1.0, 1.0, 1.0])
    fast = enc(points)
    slow = torch.tensor([slow_encode(SMALL, enc.table().detach(), p.tolist()) for p in points])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_table():
    enc = HashGridEncoding(SMALL, backend="torch")
    points = torch.rand(16, 3)
    enc(points).pow(2).sum().backward()
    enc.params.grad.zero_()
    (enc(points) * torch.randn(16, enc.n_output_dims)).sum().backward()
    touched = enc.params.grad.view(-1, 2).abs().sum(-1) > 0
    assert 0 < touched.sum() <= 16 * 8 * SMALL.n_levels


def test_release_grid_layout():
    config = HashGridConfig()  # 16 levels x 2, 2^19, base 16, max 4096
    assert config.per_level_scale == pytest.approx(1.447269237440378)
    assert config.level_resolution(0) == 16 and config.level_resolution(15) == 4096
    assert config.level_sizes()[0] == 16 ** 3 and config.level_sizes()[-1] == 2 ** 19


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tiny-cuda-nn needs CUDA")
def test_tcnn_matches_torch():
    pytest.importorskip("tinycudann")
    enc = HashGridEncoding(HashGridConfig(log2_hashmap_size=14), backend="torch").cuda()
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    points = torch.rand(1000, 3, device="cuda")
    reference = enc(points)
    enc.backend = "tcnn"
    torch.testing.assert_close(enc(points), reference, atol=1e-4, rtol=1e-3)


def test_gradients_match_autograd_through_a_gather():
    """The one-scatter backward (table and point gradients) against autograd through table[rows], level by level."""
    torch.manual_seed(1)
    enc = HashGridEncoding(SMALL, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    points = torch.rand(64, 3, requires_grad=True)
    weights = torch.randn(64, SMALL.n_levels * SMALL.n_features_per_level)
    fast = torch.autograd.grad((enc(points) * weights).sum(), [enc.params, points])

    corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
    outputs = []
    for level, size in enumerate(SMALL.level_sizes()):
        pos = points * SMALL.level_scale(level) + 0.5
        base = pos.detach().floor()
        frac = pos - base
        rows = vertex_index(base.long()[:, None, :] + corners[None], SMALL.level_resolution(level), size)
        w = torch.where(corners[None].bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)
        outputs.append((enc.table()[rows + int(enc.offsets[level])] * w[..., None]).sum(1))
    slow = torch.autograd.grad((torch.cat(outputs, -1) * weights).sum(), [enc.params, points])
    assert fast[0].abs().sum() > 0 and fast[1].abs().sum() > 0
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_rows_and_weights_match_vertex_by_vertex_at_release_size():
    """The axis-by-axis rows and outer-product weights of all levels at once equal the vertex-by-vertex arithmetic
    (8 corners x 3 axes per level) exactly, on the release grid's dense and hashed levels."""
    config = HashGridConfig()
    enc = HashGridEncoding(config, backend="torch")
    points = torch.rand(2000, 3)
    points[:2] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    rows, weights = enc._rows_and_weights(points)
    corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)])
    for level, size in enumerate(config.level_sizes()):
        pos = points * config.level_scale(level) + 0.5
        base = pos.floor()
        frac = pos - base
        expected = vertex_index(base.long()[:, None, :] + corners[None], config.level_resolution(level), size)
        assert torch.equal(rows[:, level], expected + int(enc.offsets[level]))
        w = torch.where(corners[None].bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)
        torch.testing.assert_close(weights[:, level], w, atol=0, rtol=1e-6)
    assert enc._dense_levels < config.n_levels  # both kinds of level were compared
