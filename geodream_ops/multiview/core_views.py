"""Cameras of views made with core ComfyUI's 3D-model nodes (comfy_extras/nodes_stable3d.py), in our frame, so
those views feed Build Cost Volume like Multi-View Generate's.

- StableZero123_Conditioning(_Batched): view i is conditioned on (elevation + i * elevation_batch_increment,
  azimuth + i * azimuth_batch_increment) degrees relative to the input (the plain node: every view at the first
  pair); core embeds them as Zero123's [-elevation (rad), sin azimuth, cos azimuth, pi/2], i.e. delta polar =
  -elevation. The input view is taken at elevation 0, as core and GeoDream's release both do.
- SV3D_Conditioning: an orbit of ``video_frames`` views at one absolute elevation, azimuth i * 360 / (frames - 1)
  (at least 2 in the divisor), starting at the input's view.
Our frame puts the input camera on +X (azimuth 0), azimuth growing counter-clockwise seen from +Z, as the
release's One-2-3-45 poses do for Zero123's delta azimuth (zero123_recipe)."""
from __future__ import annotations

from ..cameras import Cameras

SOURCES = ("StableZero123_Conditioning", "StableZero123_Conditioning_Batched", "SV3D_Conditioning")


def stable_zero123_cameras(elevation: float, azimuth: float, batch_size: int, elevation_increment: float,
                           azimuth_increment: float, distance: float, fovy_deg: float) -> Cameras:
    """[batch_size] cameras of core's Stable Zero123 conditioning (degrees; increments 0 for the plain node)."""
    elevations = [elevation + i * elevation_increment for i in range(batch_size)]
    azimuths = [(azimuth + i * azimuth_increment) % 360 for i in range(batch_size)]
    return Cameras.from_spherical(elevations, azimuths, distance, fovy_deg, "core-stable-zero123")


def sv3d_cameras(elevation: float, video_frames: int, distance: float, fovy_deg: float) -> Cameras:
    """[video_frames] cameras of core's SV3D_Conditioning orbit."""
    step = 360 / (max(video_frames, 2) - 1)
    return Cameras.from_spherical(elevation, [(i * step) % 360 for i in range(video_frames)], distance, fovy_deg,
                                  "core-sv3d")
