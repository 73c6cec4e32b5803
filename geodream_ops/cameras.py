"""The one camera convention of the pack.

World frame: right-handed, **Z up**. An object's front faces **+X**.
Spherical camera placement (all angles in degrees):
    position = distance * (cos(el) cos(az), cos(el) sin(az), sin(el))
so azimuth 0 sits on +X and looks along -X at the front of the object, azimuth 90 sits on +Y (the object's left
side), and a positive elevation looks down from above. Cameras look at the origin with world up +Z.

Camera frame (camera-to-world matrix ``c2w``, OpenGL style): +X right, +Y up, the camera looks along -Z.
Image frame: pixel (u, v) = (column, row), origin at the top-left corner of the top-left pixel, so the centre of
pixel (i, j) is (j + 0.5, i + 0.5); rows grow downwards. Intrinsics come from the vertical field of view:
    f = 0.5 * H / tan(fovy / 2),  cx = W / 2,  cy = H / 2.

GeoDream's research release used a Y-down frame aligned with its reference camera 0: anything imported from it is
converted into this frame where it is read, never carried in its own.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

WORLD_UP = (0.0, 0.0, 1.0)


def spherical_to_position(elevation_deg, azimuth_deg, distance) -> torch.Tensor:
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    d = torch.as_tensor(distance, dtype=torch.float32)
    return torch.stack([d * el.cos() * az.cos(), d * el.cos() * az.sin(), d * el.sin()], dim=-1)


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up=WORLD_UP) -> torch.Tensor:
    """Camera-to-world matrices [..., 4, 4] for cameras at ``eye`` looking at ``target`` (default: origin)."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.zeros_like(eye) if target is None else torch.as_tensor(target, dtype=eye.dtype).expand_as(eye)
    up = torch.as_tensor(up, dtype=eye.dtype).expand_as(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)
    right = torch.linalg.cross(up, back, dim=-1)
    # A camera straight above or below has up parallel to its axis: any right vector orthogonal to it will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0]).expand_as(eye), back, dim=-1), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = right, true_up, back, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def focal_from_fovy(fovy_deg, height: int) -> torch.Tensor:
    return 0.5 * height / torch.tan(torch.deg2rad(torch.as_tensor(fovy_deg, dtype=torch.float32)) / 2)


def fovy_from_focal(focal, height: int) -> float:
    return math.degrees(2 * math.atan(0.5 * height / float(focal)))


@dataclass
class Cameras:
    """One pinhole camera per view; travels on the GEODREAM_CAMERAS edge beside the views (an IMAGE batch)."""

    c2w: torch.Tensor  # [N, 4, 4], convention above
    fovy_deg: torch.Tensor  # [N]
    name: str = "custom"
    # World length of the release's unit for these cameras (CameraSampler.sample's ``unit``): what the release's
    # camera-to-world, the LoRA's camera input, measures distances in (release_frame.release_c2w).
    scene_unit: float = 1.0

    def __post_init__(self):
        self.c2w = torch.as_tensor(self.c2w, dtype=torch.float32)
        self.fovy_deg = torch.as_tensor(self.fovy_deg, dtype=torch.float32).reshape(-1).expand(self.c2w.shape[0]).clone()
        if self.c2w.ndim != 3 or self.c2w.shape[1:] != (4, 4):
            raise ValueError(f"c2w must be [N, 4, 4], got {tuple(self.c2w.shape)}")

    @classmethod
    def from_spherical(cls, elevation_deg, azimuth_deg, distance, fovy_deg, name="custom") -> "Cameras":
        el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
        az = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
        el, az, d = torch.broadcast_tensors(el, az, torch.as_tensor(distance, dtype=torch.float32).reshape(-1))
        return cls(look_at(spherical_to_position(el, az, d)), torch.as_tensor(fovy_deg).expand(len(el)), name)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        index = [index] if isinstance(index, int) else index
        return Cameras(self.c2w[index], self.fovy_deg[index], self.name, self.scene_unit)

    def to(self, device) -> "Cameras":
        return Cameras(self.c2w.to(device), self.fovy_deg.to(device), self.name, self.scene_unit)

    @property
    def position(self) -> torch.Tensor:
        return self.c2w[:, :3, 3]

    @property
    def distance(self) -> torch.Tensor:
        return self.position.norm(dim=-1)

    @property
    def elevation_deg(self) -> torch.Tensor:
        p = self.position
        return torch.rad2deg(torch.asin((p[:, 2] / p.norm(dim=-1)).clamp(-1, 1)))

    @property
    def azimuth_deg(self) -> torch.Tensor:
        p = self.position
        return torch.rad2deg(torch.atan2(p[:, 1], p[:, 0])) % 360

    def w2c(self) -> torch.Tensor:
        return torch.linalg.inv(self.c2w)

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """K [N, 3, 3] mapping camera-space (x, y, z) with the camera looking along +z and y down to pixels."""
        f = focal_from_fovy(self.fovy_deg, height).to(self.c2w.device)
        K = torch.zeros(len(self), 3, 3, device=self.c2w.device)
        K[:, 0, 0], K[:, 1, 1] = f, f
        K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = width / 2, height / 2, 1.0
        return K

    def project(self, points: torch.Tensor, height: int, width: int):
        """World points [P, 3] (or [N, P, 3]) -> pixel coordinates [N, P, 2] and depth along the view axis [N, P]."""
        pts = points.expand(len(self), *points.shape[-2:]) if points.ndim == 2 else points
        w2c = self.w2c().to(pts)
        cam = pts @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        depth = -cam[..., 2]
        # OpenGL camera (y up, looking along -z) to the image convention (y down, looking along +z).
        cv = torch.stack([cam[..., 0], -cam[..., 1], depth], dim=-1)
        uvw = cv @ self.intrinsics(height, width).to(pts).transpose(1, 2)
        return uvw[..., :2] / uvw[..., 2:3], depth

    def rays(self, height: int, width: int):
        """Ray origins and unit directions, each [N, H, W, 3], through the pixel centres."""
        f = focal_from_fovy(self.fovy_deg, height).to(self.c2w)
        j, i = torch.meshgrid(torch.arange(width, dtype=torch.float32, device=self.c2w.device) + 0.5,
                              torch.arange(height, dtype=torch.float32, device=self.c2w.device) + 0.5, indexing="xy")
        x = (j - width / 2)[None] / f[:, None, None]
        y = -(i - height / 2)[None] / f[:, None, None]
        d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        dirs = torch.nn.functional.normalize(torch.einsum("nij,nhwj->nhwi", self.c2w[:, :3, :3], d_cam), dim=-1)
        origins = self.c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs

    def to_dict(self) -> dict:
        return {"name": self.name, "c2w": self.c2w.cpu().tolist(), "fovy_deg": self.fovy_deg.cpu().tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> "Cameras":
        return cls(torch.tensor(data["c2w"]), torch.tensor(data["fovy_deg"]), data.get("name", "custom"))


def to_gltf_frame(points: torch.Tensor) -> torch.Tensor:
    """Our frame (Z up, front +X) to glTF's (Y up, front +Z), which mesh files and Uni3D's training data use:
    (x, y, z) -> (y, z, x), a cyclic swap of axes, i.e. a rotation that keeps the winding of faces."""
    return points[..., [1, 2, 0]]


def from_gltf_frame(points: torch.Tensor) -> torch.Tensor:
    return points[..., [2, 0, 1]]


# --- the published rigs -----------------------------------------------------------------------------------------
# GeoDream's release built its volume from views at radius 1.2 with a focal of 280 px on 256 px images.
RELEASE_DISTANCE = 1.2
RELEASE_FOVY_DEG = fovy_from_focal(280.0, 256)
ZERO123PLUS_AZIMUTHS = (30.0, 90.0, 150.0, 210.0, 270.0, 330.0)
# Both versions use absolute elevations and azimuths relative to the input view (the Zero123++ report: fixed
# absolute elevations remove the need to estimate the input's); v1.2 also fixes the field of view at 30 deg.
ZERO123PLUS_ELEVATIONS = {"v1.1": (30.0, -20.0), "v1.2": (20.0, -10.0)}
ZERO123PLUS_FOVY_DEG = {"v1.1": RELEASE_FOVY_DEG, "v1.2": 30.0}
MVDREAM_AZIMUTHS = (0.0, 90.0, 180.0, 270.0)
MVDREAM_ELEVATION = 15.0


def _same_framing_distance(fovy_deg: float) -> float:
    """The distance at which a camera of ``fovy_deg`` frames the origin like the release's cameras do."""
    return RELEASE_DISTANCE * math.tan(math.radians(RELEASE_FOVY_DEG) / 2) / math.tan(math.radians(fovy_deg) / 2)


def zero123plus_rig(version: str = "v1.2", input_azimuth: float = 0.0) -> Cameras:
    """The six views of a Zero123++ 3x2 grid, in grid order (row-major), relative to the input view's azimuth."""
    if version not in ZERO123PLUS_ELEVATIONS:
        raise ValueError(f"unknown Zero123++ version {version!r}; expected one of {sorted(ZERO123PLUS_ELEVATIONS)}")
    hi, lo = ZERO123PLUS_ELEVATIONS[version]
    elevations = [hi if k % 2 == 0 else lo for k in range(6)]
    azimuths = [(a + input_azimuth) % 360 for a in ZERO123PLUS_AZIMUTHS]
    fovy = ZERO123PLUS_FOVY_DEG[version]
    return Cameras.from_spherical(elevations, azimuths, _same_framing_distance(fovy), fovy, f"zero123plus-{version}")


def mvdream_rig(elevation: float = MVDREAM_ELEVATION, azimuth_start: float = 0.0) -> Cameras:
    """MVDream's four orthogonal views at one elevation, as GeoDream's release used them."""
    azimuths = [(a + azimuth_start) % 360 for a in MVDREAM_AZIMUTHS]
    return Cameras.from_spherical(elevation, azimuths, RELEASE_DISTANCE, RELEASE_FOVY_DEG, "mvdream-4view")


RIGS = {
    "zero123plus-v1.2": lambda elevation: zero123plus_rig("v1.2"),
    "zero123plus-v1.1": lambda elevation: zero123plus_rig("v1.1"),
    "mvdream-4view": lambda elevation: mvdream_rig(elevation),
}


# --- the random cameras of refinement -----------------------------------------------------------------------------
def scene_unit(bbox: torch.Tensor) -> float:
    """Half the largest side of a scene's box. The release refines in its prior's [-1, 1]^3 box, so its camera
    distances are in this unit; in our frame that box is larger (release_frame.SCALE)."""
    return float((bbox[1] - bbox[0]).max()) / 2


@dataclass
class CameraSampler:
    """Random views for score distillation, as the release's random-camera data module samples them
    (threestudio data/uncond.py as GeoDream ships it). Defaults: geodream-neus.yaml (distance 1.0-1.5, fovy 40-60,
    elevation -35..35: symmetric, so the same in our frame, where the sign of elevation is flipped).

    Per batch, a coin decides the elevations: with probability 1/2 uniform in angle, else uniform in sine (uniform on
    the sphere's band). Azimuths are stratified over the batch: camera k of B falls in the k-th of B equal slices of
    the range. Distances are in scene units (``scene_unit``): ``sample(..., unit=...)`` turns them into world
    lengths. Fovy in degrees."""

    distance_range: tuple[float, float] = (1.0, 1.5)
    fovy_range: tuple[float, float] = (40.0, 60.0)
    elevation_range: tuple[float, float] = (-35.0, 35.0)
    azimuth_range: tuple[float, float] = (-180.0, 180.0)

    def sample(self, batch: int, generator: torch.Generator | None = None, unit: float = 1.0) -> Cameras:
        def uniform(lo_hi):
            lo, hi = lo_hi
            return lo + (hi - lo) * torch.rand(batch, generator=generator)

        if float(torch.rand((), generator=generator)) < 0.5:
            elevation = uniform(self.elevation_range)
        else:
            s_lo, s_hi = (math.sin(math.radians(e)) for e in self.elevation_range)
            elevation = torch.rad2deg(torch.asin(uniform((s_lo, s_hi))))
        lo, hi = self.azimuth_range
        azimuth = lo + (hi - lo) * (torch.rand(batch, generator=generator) + torch.arange(batch)) / batch
        distance, fovy = uniform(self.distance_range), uniform(self.fovy_range)
        cameras = Cameras.from_spherical(elevation, azimuth, distance * unit, fovy, "random")
        cameras.scene_unit = unit
        return cameras


def view_direction(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, front_threshold: float = 20.0,
                   back_threshold: float = 40.0, overhead_threshold: float = 50.0) -> list[str]:
    """The view-dependent prompt suffix per camera ("front", "side", "back", "overhead"), the release's rule
    (threestudio prompt_processors/base.py as GeoDream ships it, thresholds of geodream-neus.yaml) in our frame.

    The release measures azimuth from its +Z, which is our back (our azimuth = 180 - its azimuth), and labels
    ", back view" within ``back_threshold`` of its 0 and ", front view" within ``front_threshold`` of its 180: in our
    frame "front" within ``front_threshold`` of azimuth 0, "back" within ``back_threshold`` of 180. Its "overhead"
    tests its own elevation, whose sign is opposite ours (Y down): a camera more than ``overhead_threshold`` *below*
    the horizon in our frame. No stage's camera range reaches it (refinement +-35, DMTet -30..40 and -10..60), so as
    released no view is ever called overhead. Later rules win, as in the release. Inputs [N] in degrees."""
    az = (torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1) + 180) % 360 - 180
    el = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    names = ["side"] * len(az)
    for i, (a, e) in enumerate(zip(az.tolist(), el.tolist())):
        if abs(a) > 180 - back_threshold:
            names[i] = "back"
        if abs(a) < front_threshold:
            names[i] = "front"
        if -e > overhead_threshold:
            names[i] = "overhead"
    return names


def mvdream_camera_embedding(cams: Cameras) -> torch.Tensor:
    """MVDream's 16-d camera input [N, 16]: the camera-to-world matrix with its position moved onto the unit sphere,
    flattened row-major. MVDream's cameras are OpenGL-style (same axes as ours) in a Blender Z-up world whose azimuth
    0 sits on -Y; that world is ours exactly, only its azimuths read 90 degrees more (our azimuth 0 is MVDream's 90,
    the first view of its t2i script), so our matrices go in unchanged."""
    c2w = cams.c2w.clone()
    c2w[:, :3, 3] = torch.nn.functional.normalize(c2w[:, :3, 3], dim=-1)
    return c2w.reshape(len(cams), 16)
