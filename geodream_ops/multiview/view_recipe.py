"""The release's view set for text to 3D: MVDream's 4 views expanded by Zero123++ v1.1 into the 14 views (4 MVDream +
10 Zero123++) from which it builds the prior's volume, at the poses of its pose table.

How the release assembles them (mv-diffusion/step1-run-mv.sh):
- MVDream/t2i_single.py generates 4 views (get_camera, azimuth_start 180: MVDream azimuths 180, 270, 0, 90) and
  saves frame k, matted on white, as ``remove_bg/{(k+1) % 4}.png``; MVDream's azimuth a is our a - 90
  (cameras.mvdream_camera_embedding), so remove_bg/0..3 sit at our azimuths 0, 90, 180, 270: our MVDream rig order.
- zero123plus/examples/img_to_6mv.py runs Zero123++ v1.1 (75 steps, fp16) on each of them and cuts its 3x2 grid
  into tiles 1..6 (row-major: relative azimuths 30..330 in steps of 60, absolute elevations 30/-20).
- rank_again/rank_and_resize.py files them as views 0..39 (MVDream view k as 12 + 7k, the tiles from view k as
  13 + 7k .. 18 + 7k for k >= 1), resizes all to 256 and mattes them on white.
- One2345_eval_new_data.py builds the volume from views 12, 19, 20, 22-26, 32-36, 39, at the poses of
  One-2-3-45/exp/pose.json: radius 1.2, focal 280 px on 256 px, Blender's Z-up OpenGL look-at, the MVDream views
  at elevation 0 (they were generated at 15), each tile at its Zero123++ v1.1 pose relative to its source view.
  That table's world is ours turned by +90 degrees about Z: ours = (-y, x, z) of its (x, y, z).
So, per source view in our rig order, the tiles kept are RELEASE_TILES (0-based): none of the front view's, five of
the left side's, one of the back's, four of the right side's."""
from __future__ import annotations

import torch

from ..cameras import RELEASE_DISTANCE, RELEASE_FOVY_DEG, Cameras, zero123plus_rig
from ..errors import GeoDreamError

RELEASE_ZERO123PLUS = "v1.1"
RELEASE_TILES = ((), (0, 2, 3, 4, 5), (5,), (0, 1, 2, 5))
ALL_TILES = (0, 1, 2, 3, 4, 5)
RECIPES = ("release 14 views", "all 6 per view")
# Where the source views' cameras come from: the release's pose table (elevation 0, radius 1.2, focal 280 px) or
# the cameras that came with the views.
SOURCE_CAMERAS = ("release pose table", "as given")


def tile_selection(recipe: str, num_sources: int) -> tuple[tuple[int, ...], ...]:
    """Which Zero123++ tiles (0-based, grid order) to keep from each source view."""
    if recipe == RECIPES[0]:
        if num_sources != len(RELEASE_TILES):
            raise GeoDreamError(f"GeoDream: the release's 14-view recipe expands MVDream's 4 views (front, left, back, "
                                f"right, as Multi-View Generate gives them), got {num_sources}; use 'all 6 per view' "
                                "for other view sets.")
        return RELEASE_TILES
    if recipe == RECIPES[1]:
        return (ALL_TILES,) * num_sources
    raise GeoDreamError(f"GeoDream: unknown view recipe {recipe!r}; use one of {RECIPES}.")


def release_source_cameras(source: Cameras) -> Cameras:
    """The source views' cameras as the release's pose table has them: the same azimuths, elevation 0, radius 1.2,
    focal 280 px on 256 px."""
    return Cameras.from_spherical(0.0, source.azimuth_deg, RELEASE_DISTANCE, RELEASE_FOVY_DEG, source.name)


def concat(parts: list[Cameras], name: str) -> Cameras:
    return Cameras(torch.cat([c.c2w for c in parts]), torch.cat([c.fovy_deg for c in parts]), name)


def expanded_cameras(source: Cameras, selection, version: str = RELEASE_ZERO123PLUS) -> Cameras:
    """Cameras [sum over sources of 1 + len(tiles)]: each source view's camera, then those of its kept Zero123++
    tiles (the published rig of ``version``, azimuths relative to the source's, absolute elevations)."""
    parts = []
    for index, tiles in enumerate(selection):
        parts.append(source[[index]])
        if tiles:
            parts.append(zero123plus_rig(version, float(source.azimuth_deg[index]))[list(tiles)])
    return concat(parts, f"{source.name}+zero123plus-{version}")
