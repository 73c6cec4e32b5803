"""Fuzzing what users bring: a few hundred random small images (modes, sizes, alpha patterns, EXIF, formats, cut-off
and garbage bytes) and meshes (random faces, duplicates, opposite windings, degenerate, NaN/inf, bad indices, every
file format) through the loaders and the mesh stages' entry points. Every input either gives finite output of the
documented shape or a GeoDreamError; any other exception fails, and the mesh half runs in a child process, so a
crash in native code (xatlas, trimesh, skimage) fails the test instead of killing it."""
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.images import load_image_file
from geodream_pack.nodes.multiview import GeoDreamMultiViewGenerate

ROOT = Path(__file__).resolve().parent.parent
MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F")
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}


def random_image(rng: np.random.Generator) -> Image.Image:
    mode = MODES[rng.integers(len(MODES))]
    h, w = (int(x) for x in rng.integers(1, 24, size=2))
    bands = {"1": 1, "L": 1, "LA": 2, "P": 1, "PA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "I;16": 1, "I": 1, "F": 1}[mode]
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        values = rng.integers(0, 70000, size=(h, w)).astype(dtype)
        return Image.fromarray(values)
    pixels = rng.integers(0, 256, size=(h, w, bands), dtype=np.uint8)
    if bands in (2, 4) and mode != "CMYK":  # alpha patterns: opaque, transparent, binary, ramp
        pattern = rng.integers(4)
        pixels[..., -1] = (255, 0, (pixels[..., -1] > 127) * 255, pixels[..., -1])[pattern]
    image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, None if mode in ("P", "PA") else None)
    if mode in ("P", "PA"):
        image = Image.fromarray(pixels[..., 0], "P")
        image.putpalette(rng.integers(0, 256, size=768, dtype=np.uint8).tolist())
        if rng.random() < 0.5:
            image.info["transparency"] = int(rng.integers(256))
        return image
    return image.convert(mode) if image.mode != mode else image


def encode(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """The image in a random format that can hold its mode (else PNG or TIFF), with EXIF orientation sometimes,
    cut short or garbled sometimes."""
    name = list(FORMATS)[rng.integers(len(FORMATS))]
    buffer = io.BytesIO()
    kwargs = {}
    if name in ("JPEG", "TIFF", "WEBP", "PNG") and rng.random() < 0.4:
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(1, 9))
        kwargs["exif"] = exif
    if "transparency" in image.info and name in ("PNG", "GIF"):
        kwargs["transparency"] = image.info["transparency"]
    try:
        image.save(buffer, name, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):  # the format cannot hold this mode
        name = "TIFF" if image.mode in ("I;16", "I", "F", "CMYK") else "PNG"
        buffer = io.BytesIO()
        image.save(buffer, name)
    data = buffer.getvalue()
    damage = rng.random()
    if damage < 0.08:
        data = data[: int(len(data) * rng.uniform(0.2, 0.95))]
    elif damage < 0.12:
        data = rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8).tobytes()
    return data, FORMATS[name]


def test_random_images_load_finite_or_fail_with_a_geodream_error(tmp_path):
    rng = np.random.default_rng(14)
    outcomes = {"loaded": 0, "refused": 0}
    for index in range(300):
        data, suffix = encode(random_image(rng), rng)
        path = tmp_path / f"fuzz{index}{suffix}"
        path.write_bytes(data)
        try:
            images, masks = load_image_file(path)
        except GeoDreamError as error:
            assert path.name in str(error)
            outcomes["refused"] += 1
            continue
        assert images.ndim == 4 and images.shape[-1] == 3 and masks.ndim == 3 and images.shape[0] == masks.shape[0]
        assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
        assert torch.isfinite(masks).all() and masks.min() >= 0 and masks.max() <= 1
        outcomes["loaded"] += 1
        try:
            square = GeoDreamMultiViewGenerate._object_image(images[:1], masks[:1], 16)
        except GeoDreamError:
            continue
        assert square.shape == (16, 16, 3) and torch.isfinite(square).all()
    assert outcomes["loaded"] > 200 and outcomes["refused"] > 5, outcomes  # both paths were exercised


def fuzz_meshes(folder: str, count: int, seed: int) -> dict:
    """Random meshes through clean_faces, bake_texture (xatlas), surface sampling, save_mesh and every importer;
    returns how many were accepted and refused. Raises on anything but a GeoDreamError or a non-finite output."""
    import trimesh

    from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
    from geodream_pack.geodream_ops.mesh.mesh_export import save_mesh
    from geodream_pack.geodream_ops.mesh.mesh_import import load_mesh
    from geodream_pack.geodream_ops.uni3d.point_sampling import mesh_point_cloud
    from geodream_pack.geodream_ops.mesh.texture_bake import bake_texture

    rng = np.random.default_rng(seed)
    folder = Path(folder)
    counts = {"accepted": 0, "refused": 0}

    def attempt(fn):
        try:
            fn()
            counts["accepted"] += 1
        except GeoDreamError:
            counts["refused"] += 1

    for index in range(count):
        nv = int(rng.integers(3, 30))
        vertices = rng.normal(size=(nv, 3)) * rng.choice([1e-9, 1.0, 1e4])
        kind = rng.integers(8)
        if kind == 0:
            vertices[rng.integers(nv), rng.integers(3)] = np.nan
        elif kind == 1:
            vertices[rng.integers(nv), rng.integers(3)] = np.inf
        elif kind == 2:
            vertices[:] = vertices[0]  # every face a point
        elif kind == 3:
            vertices[:, 1], vertices[:, 2] = 2 * vertices[:, 0], 0  # every face a line
        faces = rng.integers(0, nv, size=(int(rng.integers(1, 40)), 3))
        if rng.random() < 0.3:
            faces = np.concatenate([faces, faces[:, [1, 0, 2]]])  # opposite windings
        if rng.random() < 0.3:
            faces = np.concatenate([faces, faces])
        if rng.random() < 0.1:
            faces[0, 0] = rng.choice([-1, nv, nv + 5])
        v, f = torch.from_numpy(vertices).float(), torch.from_numpy(faces)

        def bake():
            mesh = bake_texture(v, f, lambda p: torch.sigmoid(p), size=16, padding=1)
            assert torch.isfinite(mesh.uvs).all() and torch.isfinite(mesh.texture).all()
            assert mesh.uvs.min() >= 0 and mesh.uvs.max() <= 1

        def sample():
            mesh = TexturedMesh(v, f, vertex_colors=torch.rand(nv, 3))
            points = mesh_point_cloud(mesh, 64, seed=index)
            assert points.shape == (64, 6) and torch.isfinite(points).all()

        def round_trip():
            mesh = TexturedMesh(v, f, vertex_colors=torch.rand(nv, 3))
            path = save_mesh(mesh, folder / f"saved{index}", "glb" if index % 2 else "obj")[0]
            loaded = load_mesh(path)
            assert torch.isfinite(loaded.vertices).all() and loaded.faces.shape[0] > 0

        def import_file():
            suffix = (".glb", ".obj", ".ply", ".off")[index % 4]
            path = folder / f"file{index}{suffix}"
            mesh = trimesh.Trimesh(vertices, np.clip(faces, 0, nv - 1), process=False)
            if rng.random() < 0.5:
                mesh.visual.vertex_colors = rng.integers(0, 256, size=(nv, 4), dtype=np.uint8)
            mesh.export(path)
            if rng.random() < 0.15:
                data = path.read_bytes()
                path.write_bytes(data[: int(len(data) * rng.uniform(0.1, 0.9))])
            loaded = load_mesh(path)
            assert torch.isfinite(loaded.vertices).all() and loaded.faces.shape[0] > 0
            points = mesh_point_cloud(loaded, 64, seed=index)
            assert torch.isfinite(points).all() and points[:, 3:].min() >= 0 and points[:, 3:].max() <= 1

        for check in (bake, sample, round_trip, import_file):
            attempt(check)
    return counts


def test_random_meshes_never_crash_and_give_finite_output_or_a_geodream_error(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from headless.pack import load_pack
        load_pack()
        import torch
        torch.set_num_threads(1)
        from tests.test_fuzz_inputs import fuzz_meshes
        print("counts", fuzz_meshes({str(tmp_path)!r}, 60, 14))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = eval(result.stdout.split("counts", 1)[1].strip())  # noqa: S307 (our own child's dict)
    assert counts["accepted"] > 60 and counts["refused"] > 60, counts  # 4 checks per mesh: both paths exercised
