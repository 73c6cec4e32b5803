"""Named sizes of the hash-grid texture, for the nodes' ``texture_grid`` input: the release's (threestudio's
16 levels x 2 features, 2^19 entries, resolutions 16..4096), and a small one for quick CPU runs (8 levels, 2^14
entries, 8..128: 0.26 M parameters instead of 16.8 M; measured ~8x faster refinement steps at 64 px on CPU)."""
from __future__ import annotations

from .hash_grid import HashGridConfig

GRID_PRESETS = {
    "release": HashGridConfig(),
    "small (CPU)": HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8, max_resolution=128),
}
TOOLTIP = ("Size of the hash-grid texture. release: the release's 16 levels of 2^19 entries (16.8 M parameters). "
           "small (CPU): 8 levels of 2^14 (0.26 M), much faster on a CPU and coarser in detail.")
