"""Marching tetrahedra as DMTet uses it: the surface where the linear interpolation of the SDF along a tetrahedron
edge crosses 0, with vertex positions differentiable in the SDF values and in the (deformed) grid vertices.

Inside is sdf < 0. Triangles are oriented combinatorially, so the mesh is consistently oriented (normals point to
sdf > 0) whatever the geometry: for a positively oriented tetrahedron (a, b, c, d) the triangle through points on
edges (a,b), (a,c), (a,d) faces away from a (scaling along the edges from a keeps det(b-a, c-a, d-a) > 0)."""
from __future__ import annotations

from itertools import permutations

import torch


def _parity(order) -> int:
    return sum(order[i] > order[j] for i in range(4) for j in range(i + 1, 4)) % 2


def _triangle_table():
    """For each of the 16 inside/outside cases (bit k: vertex k inside): up to two triangles, each three edges
    (inside vertex, outside vertex), oriented to face the outside."""
    table = torch.zeros(16, 2, 3, 2, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    even = [p for p in permutations(range(4)) if _parity(p) == 0]
    odd = [p for p in permutations(range(4)) if _parity(p) == 1]
    for case in range(1, 15):
        inside = {k for k in range(4) if case >> k & 1}
        if len(inside) == 1:  # the triangle faces away from the inside vertex i: (i, j, k, l) even
            i, j, k, l = next(p for p in even if p[0] in inside)
            tris = [[(i, j), (i, k), (i, l)]]
        elif len(inside) == 3:  # faces towards the outside vertex o: (o, j, k, l) odd
            o, j, k, l = next(p for p in odd if p[0] not in inside)
            tris = [[(j, o), (k, o), (l, o)]]
        else:  # a quad between inside (a, b) and outside (c, d), (a, b, c, d) even
            a, b, c, d = next(p for p in even if {p[0], p[1]} == inside)
            tris = [[(a, c), (a, d), (b, d)], [(a, c), (b, d), (b, c)]]
        table[case, :len(tris)] = torch.tensor(tris)
        count[case] = len(tris)
    return table, count


TRIANGLE_TABLE, TRIANGLE_COUNT = _triangle_table()
_BITS = torch.tensor([1, 2, 4, 8])


def marching_tets(vertices: torch.Tensor, sdf: torch.Tensor, tets: torch.Tensor):
    """vertices [N, 3], sdf [N], tets [T, 4] (positively oriented) -> (mesh vertices [V, 3], faces [F, 3]).

    Vertices on the same grid edge are shared between tetrahedra, so a conforming grid gives a watertight mesh."""
    device = vertices.device
    inside = sdf.detach()[tets] < 0
    case = (inside.long() * _BITS.to(device)).sum(-1)
    count = TRIANGLE_COUNT.to(device)[case]
    crossing = count > 0
    tets, case, count = tets[crossing], case[crossing], count[crossing]
    if tets.shape[0] == 0:
        return vertices.new_zeros(0, 3), torch.zeros(0, 3, dtype=torch.long, device=device)

    owner = torch.repeat_interleave(torch.arange(tets.shape[0], device=device), count)
    first = torch.cumsum(count, 0) - count
    slot = torch.arange(owner.shape[0], device=device) - first[owner]
    local = TRIANGLE_TABLE.to(device)[case[owner], slot]  # [F, 3, 2] local (inside, outside) corners
    ends = torch.gather(tets[owner], 1, local.reshape(-1, 6)).reshape(-1, 2)  # global (inside, outside) ids

    # The inside end of an edge is fixed by the signs, so (inside, outside) names each crossed edge once.
    n = vertices.shape[0]
    keys, inverse = torch.unique(ends[:, 0] * n + ends[:, 1], return_inverse=True)
    a, b = keys // n, keys % n
    sa, sb = sdf[a, None], sdf[b, None]
    points = (vertices[a] * sb - vertices[b] * sa) / (sb - sa)  # the zero of the linear SDF along a -> b
    return points, inverse.reshape(-1, 3)
