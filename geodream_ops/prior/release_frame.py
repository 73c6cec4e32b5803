"""The frame in which the released SparseNeuS weights work, and its conversion to the pack's frame (cameras.py).

One-2-3-45 (and GeoDream's release after it) express everything in the OpenCV frame of reference camera 0 (x right,
y **down**, z forward), then normalise it by a "scale_mat" that its data loader recomputes for every view set from
the frusta of the views it reads (data/One2345_eval_new_data.py ``cal_scale_mat`` + data/scene.py
``get_boundingbox``): the axis-aligned box of all frustum corners (pixel corners 0 and 256, near/far from pose.json,
which gen_poses writes as radius - 0.7 and radius + 0.6), its centre, and half its longest side times 1.1 as radius.
The text path reads views 0,12,19,20,22-26,32-36,39 of GeoDream's pose table; the Zero123 path the 31 views of
zero123_recipe.PRIOR_VIEWS; both put camera 0 at elevation 0 in front of the object (+X here, distance 1.2).

The pack carries that normalisation as a **box**: [2, 3] min/max corners, in our frame, of the release's [-1, 1]^3
(``view_set_box``; CostVolume.bbox, and the geometry decoder's ``frame``). With s = half its side and c its centre:

    ours = s * (-z_r, x_r, -y_r) + c

The axes stay those of a camera 0 on +X at elevation 0 for every view set (what both release paths have); only the
centre and size follow the cameras. For the pose table (``BBOX``) c = (0, 0, -Y_SHIFT) and s = SCALE.

The release's volume tensors are laid out [1, C, X_r, Y_r, Z_r]; ours are [1, C, D=z, H=y, W=x]. The sparse 3D CNN
and the decoder f_g are not rotation invariant, so the prior is always built in the release frame and converted
here, at its boundary."""
from __future__ import annotations

import torch

# The scale_mat of GeoDream's pose table (the text path's 14 views), recomputed from pose.json with the release's
# get_boundingbox: the box of BBOX, and of every cost volume or field saved before boxes followed the view set.
SCALE = 1.3395096303394856
Y_SHIFT = 0.017085144
RELEASE_GRID = 96  # lod0 voxels per axis over the release's [-1, 1]^3 (voxel size 2/95)
RELEASE_VOLUME_RESOLUTION = 150  # GeoDream upsamples the lod0 volume to 150^3 for refinement
RELEASE_IMAGE_SIZE = 256

# Columns: where the release's x, y, z axes point in our frame.
_AXES = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_OFFSET = torch.tensor([0.0, 0.0, -Y_SHIFT])
BBOX = torch.stack([_OFFSET - SCALE, _OFFSET + SCALE])  # the pose table's [-1, 1]^3 in our frame
SCALE_FACTOR = 1.1  # cal_scale_mat(..., factor=1.1)
NEAR_FAR_MARGINS = (0.7, 0.6)  # gen_poses: near_far = [radius - 0.7, radius + 0.6]


def box_scale(box: torch.Tensor) -> torch.Tensor:
    """Half the side of a frame box [2, 3] (its scale_mat radius, in our length unit): a 0-d tensor."""
    return (box[1] - box[0]).max() / 2


def box_centre(box: torch.Tensor) -> torch.Tensor:
    """The centre [3] of a frame box [2, 3], in our frame."""
    return (box[0] + box[1]) / 2


def from_release(points: torch.Tensor, box: torch.Tensor = BBOX) -> torch.Tensor:
    """Release points [..., 3] of the frame ``box`` (default the pose table's) -> our world frame."""
    box = box.to(points)
    return box_scale(box) * points @ _AXES.to(points).t() + box_centre(box)


def to_release(points: torch.Tensor, box: torch.Tensor = BBOX) -> torch.Tensor:
    """Our world points [..., 3] -> the release frame of ``box`` (default the pose table's)."""
    box = box.to(points)
    return ((points - box_centre(box)) / box_scale(box)) @ _AXES.to(points)


def view_set_box(cameras, image_size: int = RELEASE_IMAGE_SIZE, factor: float = SCALE_FACTOR) -> torch.Tensor:
    """The release's scale_mat for a view set, as a frame box [2, 3] (float32, our frame): get_boundingbox over the
    frusta of ``cameras`` (pack frame; pixel corners 0 and ``image_size``, focal from each fovy, principal point at
    the centre; near/far = distance - 0.7 and distance + 0.6, gen_poses' rule, 0.5/1.8 at the release's 1.2), in
    the axes of a reference camera on +X at elevation 0, radius = half the longest side x ``factor``
    (One2345_eval_new_data.py cal_scale_mat, data/scene.py get_boundingbox). Computed in float64."""
    c2w = cameras.c2w.detach().double().cpu()
    focal = (0.5 * image_size / torch.tan(torch.deg2rad(cameras.fovy_deg.detach().double().cpu()) / 2))
    distance = c2w[:, :3, 3].norm(dim=-1)
    corners = []
    for depth in (distance - NEAR_FAR_MARGINS[0], distance + NEAR_FAR_MARGINS[1]):
        for u in (0.0, image_size):
            for v in (0.0, image_size):
                x = (u - image_size / 2) * depth / focal
                y = (v - image_size / 2) * depth / focal
                # OpenCV (x right, y down, z forward) to our OpenGL-style camera axes (y up, looking along -z).
                camera = torch.stack([x, -y, -depth], dim=-1)
                corners.append(torch.einsum("nij,nj->ni", c2w[:, :3, :3], camera) + c2w[:, :3, 3])
    release_axes = torch.cat(corners) @ _AXES.double()  # rotated into the reference camera's axes
    low, high = release_axes.min(0).values, release_axes.max(0).values
    radius = (high - low).max() / 2 * factor
    centre = _AXES.double() @ ((low + high) / 2)
    return torch.stack([centre - radius, centre + radius]).float()


# Sparse rigs (MVDream's 4 views, Zero123++'s 6) bound smaller frusta than the rigs SparseNeuS was trained on and
# the release runs (its 14- and 31-view sets, half sides 1.34 and 1.39): their own box (MVDream's 4: 0.905) would
# show the prior a 1.5x larger object than it learnt, and put refinement's nearest cameras (1.0 unit, fovy 40: half
# width 0.36 unit) inside the object (radius ~0.5: 0.55 unit). Such a set gets the pose table's box instead; False
# is the release's rule for every set.
FLOOR_AT_POSE_TABLE = True


def prior_box(cameras) -> torch.Tensor:
    """The frame box [2, 3] a view set's cost volume is built in: ``view_set_box`` (the release's rule), or the
    pose table's ``BBOX`` where that box is smaller and FLOOR_AT_POSE_TABLE holds (sets the release never runs)."""
    box = view_set_box(cameras)
    if FLOOR_AT_POSE_TABLE and float(box_scale(box)) < float(box_scale(BBOX)) - 1e-6:
        return BBOX.clone()
    return box


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
