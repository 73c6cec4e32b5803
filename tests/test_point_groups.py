"""FPS and kNN against slow loops written the obvious way."""
import math

import torch

from geodream_pack.geodream_ops.uni3d.point_groups import farthest_point_sample, gather, knn


def slow_fps(points: list[list[float]], count: int) -> list[int]:
    centroid = [sum(p[k] for p in points) / len(points) for k in range(3)]
    start = max(range(len(points)), key=lambda i: math.dist(points[i], centroid))
    chosen = [start]
    while len(chosen) < count:
        # the point whose nearest chosen centre is farthest away
        chosen.append(max(range(len(points)), key=lambda i: min(math.dist(points[i], points[c]) for c in chosen)))
    return chosen


def test_fps_matches_slow_loop():
    xyz = torch.rand(2, 120, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    picked = farthest_point_sample(xyz, 12)
    for b in range(2):
        assert picked[b].tolist() == slow_fps(xyz[b].tolist(), 12)


def test_fps_ignores_point_order():
    xyz = torch.randn(1, 300, 3, generator=torch.Generator().manual_seed(2))
    order = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    direct = gather(xyz, farthest_point_sample(xyz, 20))
    shuffled = gather(xyz[:, order], farthest_point_sample(xyz[:, order], 20))
    assert torch.equal(direct, shuffled)


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(4)
    xyz, centres = torch.randn(2, 200, 3, generator=g), torch.randn(2, 7, 3, generator=g)
    found = knn(xyz, centres, 9)
    assert found.shape == (2, 7, 9)
    for b in range(2):
        for c in range(7):
            distances = [math.dist(centres[b, c].tolist(), p) for p in xyz[b].tolist()]
            nearest = sorted(range(200), key=distances.__getitem__)[:9]
            assert sorted(found[b, c].tolist()) == sorted(nearest)


def test_gather_picks_rows_per_batch():
    values = torch.arange(2 * 5 * 2).reshape(2, 5, 2)
    index = torch.tensor([[[4, 0]], [[1, 1]]])
    assert gather(values, index).tolist() == [[[[8, 9], [0, 1]]], [[[12, 13], [12, 13]]]]
