"""The frame in which the released SparseNeuS weights work, and its conversion to the pack's frame (cameras.py).

One-2-3-45 (and GeoDream's release after it) express everything in the OpenCV frame of reference camera 0 (x right,
y **down**, z forward), then normalise it by a "scale_mat" computed from the frusta of the views it used
(data/One2345_eval_new_data.py + data/scene.py get_boundingbox, factor 1.1). For GeoDream's fixed pose table (camera 0
at elevation 0 looking at the object's front from distance 1.2, focal 280 px on 256 px, near/far 0.5/1.8, views
0,12,19,20,22-26,32-36,39) that normalisation is: camera-0 point = SCALE * release point + (0, Y_SHIFT, 1.2).
Camera 0 is the front view, which sits on +X in our frame, so (with s = SCALE):

    ours = s * (-z_r, x_r, -y_r) + (0, 0, -Y_SHIFT)

The release's volume tensors are laid out [1, C, X_r, Y_r, Z_r]; ours are [1, C, D=z, H=y, W=x]. The sparse 3D CNN
and the decoder f_g are not rotation invariant, so the prior is always built in the release frame and converted
here, at its boundary."""
from __future__ import annotations

import torch

# The scale_mat of GeoDream's pose table, recomputed from pose.json with the release's get_boundingbox.
SCALE = 1.3395096303394856
Y_SHIFT = 0.017085144
RELEASE_GRID = 96  # lod0 voxels per axis over the release's [-1, 1]^3 (voxel size 2/95)
RELEASE_VOLUME_RESOLUTION = 150  # GeoDream upsamples the lod0 volume to 150^3 for refinement
RELEASE_IMAGE_SIZE = 256

# Columns: where the release's x, y, z axes point in our frame.
_AXES = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_OFFSET = torch.tensor([0.0, 0.0, -Y_SHIFT])
BBOX = torch.stack([_OFFSET - SCALE, _OFFSET + SCALE])  # the release's [-1, 1]^3 in our frame


def from_release(points: torch.Tensor) -> torch.Tensor:
    """Release points [..., 3] -> our world frame."""
    return SCALE * points @ _AXES.to(points).t() + _OFFSET.to(points)


def to_release(points: torch.Tensor) -> torch.Tensor:
    """Our world points [..., 3] -> the release frame."""
    return ((points - _OFFSET.to(points)) / SCALE) @ _AXES.to(points)


def direction_to_release(directions: torch.Tensor) -> torch.Tensor:
    """Our directions [..., 3] (normals, view rays) in the release frame: the rotation of ``to_release`` alone."""
    return directions @ _AXES.to(directions)


def release_c2w(cameras) -> torch.Tensor:
    """[N, 4, 4] the camera-to-world the release's random-camera data (threestudio/data/uncond.py) builds for the
    same view: columns right, up, -lookat and position in its Y-down frame, the position in its unit (``cameras.
    scene_unit`` of ours) from the point looked at (ours look at the origin, its at its origin). Both frames build
    right = up x back, and the axis map is a rotation, so the columns map one to one."""
    c2w = cameras.c2w
    out = torch.zeros_like(c2w)
    out[:, :3, :3] = direction_to_release(c2w[:, :3, :3].transpose(1, 2)).transpose(1, 2)
    out[:, :3, 3] = direction_to_release(c2w[:, :3, 3]) / cameras.scene_unit
    out[:, 3, 3] = 1.0
    return out


def volume_from_release(volume: torch.Tensor) -> torch.Tensor:
    """[1, C, X_r, Y_r, Z_r] -> [1, C, D, H, W] of our frame: our z = -y_r, y = x_r, x = -z_r."""
    return volume.permute(0, 1, 3, 2, 4).flip(2, 4).contiguous()


def volume_to_release(volume: torch.Tensor) -> torch.Tensor:
    return volume.flip(2, 4).permute(0, 1, 3, 2, 4).contiguous()
