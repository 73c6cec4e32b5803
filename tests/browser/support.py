"""Shared by tests/test_browser.py and bench/comfyui_check.py: Debian's Chromium under Playwright, and a test GLB."""
import shutil

import numpy as np
import trimesh
from PIL import Image

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# --disable-gpu leaves WebGL to SwiftShader; recent Chromium runs WebGL on it only when asked (the last two flags).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def launch(playwright, profile_dir, width=512, height=512):
    """A browser context with a fresh profile in ``profile_dir`` (Playwright takes it instead of --user-data-dir)."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS,
        viewport={"width": width, "height": height}, device_scale_factor=1)


def textured_box_glb(extents, center, color=(220, 30, 30)) -> bytes:
    """A box whose every face carries the same solid-colour texture, through UVs (the path our meshes take)."""
    corners = trimesh.creation.box(extents=extents).vertices + center
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    vertices = np.concatenate([corners[q] for q in quads])
    faces = np.array([[i, i + 1, i + 2] for i in range(0, 24, 4)] + [[i, i + 2, i + 3] for i in range(0, 24, 4)])
    uv = np.tile([[0, 0], [1, 0], [1, 1], [0, 1]], (6, 1)).astype(float)
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.new("RGB", (8, 8), color),
                                                   metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True)
    mesh = trimesh.Trimesh(vertices, faces, visual=trimesh.visual.TextureVisuals(uv=uv, material=material),
                           process=False)
    return mesh.export(file_type="glb")
