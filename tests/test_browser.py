"""The editor extension's plain modules in a real browser: headless Chromium (Debian's package) driven by Playwright.
The viewer draws a textured GLB, and the OBJ + MTL + PNG our exporter writes, where the camera math says it
projects; the live-preview handler shows a PNG it is sent, captioned with its step and note; the score panel shows
the Uni3D node's number. Skipped only when Chromium or Playwright is missing on a developer's machine; under CI=true
that fails."""
import base64
import functools
import http.server
import io
import json
import math
import os
import threading

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh

from tests.browser.support import CHROMIUM, launch, textured_box_glb
from headless.pack import PACK_ROOT

SIZE = 256
FOVY_DEG, ELEVATION_DEG = 40.0, 15.0  # web/viewer.js: camera field of view and front-view elevation
BOX_EXTENTS, BOX_CENTER = np.array([1.0, 0.6, 0.8]), np.array([0.3, 0.1, -0.2])


def _require_browser():
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the Python package 'playwright' (pip install -r requirements-test.txt)"
    if missing is None and not os.path.exists(CHROMIUM):
        missing = "Chromium (apt-get install chromium)"
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must run the browser test, but {missing} is not installed")
        pytest.skip(f"browser test needs {missing}")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    _require_browser()
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(PACK_ROOT))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as pw:
        context = launch(pw, tmp_path_factory.mktemp("chromium-profile"))
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"http://127.0.0.1:{server.server_port}/tests/browser/index.html")
        page.wait_for_function("window.geodreamReady === true", timeout=30_000)
        yield page
        context.close()
    server.shutdown()
    assert not errors, errors


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _expected_screen_box():
    """Pixel bounding box of the box's 8 corners seen from the viewer's framing camera (glTF frame: Y up, front +Z)."""
    corners = trimesh.creation.box(extents=BOX_EXTENTS).vertices + BOX_CENTER
    radius = np.linalg.norm(BOX_EXTENTS) / 2
    distance = radius / math.sin(math.radians(FOVY_DEG / 2))
    el = math.radians(ELEVATION_DEG)
    eye = BOX_CENTER + distance * np.array([0.0, math.sin(el), math.cos(el)])
    back = (eye - BOX_CENTER) / np.linalg.norm(eye - BOX_CENTER)
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    rel = corners - eye
    x, y, z = rel @ right, rel @ up, rel @ back
    focal = 1 / math.tan(math.radians(FOVY_DEG / 2))
    px = (focal * x / -z + 1) / 2 * SIZE
    py = (1 - focal * y / -z) / 2 * SIZE
    return px.min(), py.min(), px.max(), py.max()


def _pixels(page, selector_js):
    """RGBA pixels of a canvas or image element, read through a 2D canvas."""
    data = page.evaluate(f"""() => {{
        const source = {selector_js};
        const c = document.createElement('canvas');
        c.width = source.naturalWidth || source.width; c.height = source.naturalHeight || source.height;
        const g = c.getContext('2d');
        g.drawImage(source, 0, 0);
        return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];
    }}""")
    width, height, flat = data
    return np.array(flat, dtype=np.uint8).reshape(height, width, 4)


def _box_obj_files(folder) -> dict:
    """The box of textured_box_glb written by the pack's own OBJ exporter (OBJ + MTL + PNG), by file name."""
    from geodream_pack.geodream_ops.mesh.mesh_export import save_mesh
    from geodream_pack.geodream_ops.mesh.mesh_import import load_mesh

    glb = folder / "box.glb"
    glb.write_bytes(textured_box_glb(BOX_EXTENTS, BOX_CENTER))
    mesh = load_mesh(glb)  # into the pack's Z-up frame, as the DMTet node hands meshes to Save Mesh
    paths = save_mesh(mesh, folder / "box.obj", "obj")
    return {p.name: p.read_bytes() for p in paths}


def _fulfill(route, body):
    route.fulfill(body=body)


@pytest.mark.parametrize("fmt", ["glb", "obj"])
def test_viewer_draws_the_mesh_where_it_projects(page, fmt, tmp_path):
    if fmt == "glb":
        files = {"box.glb": textured_box_glb(BOX_EXTENTS, BOX_CENTER)}
    else:
        files = _box_obj_files(tmp_path)
    for name, body in files.items():
        page.route(f"**/files/{name}", functools.partial(_fulfill, body=body))
    page.evaluate("""async (fmt) => {
        window.meshView?.dispose();
        window.meshView = await window.geodream.showMesh(document.getElementById('view'), `/files/box.${fmt}`,
                                                     {format: fmt, fileURL: (name) => `/files/${name}`});
    }""", fmt)
    rgba = _pixels(page, "document.getElementById('view')")
    assert rgba.shape == (SIZE, SIZE, 4)
    background = np.array([(0x1E1E1E >> s) & 255 for s in (16, 8, 0)])
    assert page.evaluate("window.geodream.BACKGROUND") == 0x1E1E1E
    drawn = np.abs(rgba[..., :3].astype(int) - background).max(-1) > 8
    rows, cols = np.nonzero(drawn)
    assert drawn.sum() > 0.1 * SIZE * SIZE, "the mesh is missing from the canvas"
    x0, y0, x1, y1 = _expected_screen_box()
    # The mesh covers exactly its projection: edges within 2 px (antialiasing), background elsewhere.
    np.testing.assert_allclose([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], [x0, y0, x1, y1], atol=2.5)
    # Lit red texture (edges blend with the grey background): red dominates everywhere the mesh is drawn.
    inner = drawn.copy()
    inner[:, : int(x0) + 3] = inner[:, int(x1) - 3:] = False
    red, green, blue = (rgba[..., i][inner].astype(int) for i in range(3))
    assert (red > 1.8 * np.maximum(green, blue)).all()


def _png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_preview_handler_shows_the_image_it_is_sent(page):
    image = Image.new("RGB", (8, 4), (0, 0, 255))
    image.paste((255, 200, 0), (0, 0, 4, 4))
    page.evaluate("""async (png) => {
        const g = window.geodream;
        window.panel = new g.PreviewPanel();
        document.getElementById('preview').append(window.panel.element);
        const panelFor = (id) => (id === '7' ? window.panel : null);
        window.other = g.handlePreview({node: 3, image: png, step: 1, total: 10}, panelFor);
        await g.handlePreview({node: 7, image: png, step: 300, total: 1000}, panelFor);
    }""", _png_base64(image))
    assert page.evaluate("window.other") is None  # a node that is not on the graph is ignored
    assert page.evaluate("window.panel.caption.textContent") == "step 300 / 1000"
    rgba = _pixels(page, "window.panel.image")
    np.testing.assert_array_equal(rgba[..., :3], np.asarray(image))
    # A newer event replaces the image.
    page.evaluate("""(png) => window.geodream.handlePreview({node: '7', image: 'data:image/png;base64,' + png,
                                                            step: 400, total: 1000}, () => window.panel)""",
                  _png_base64(Image.new("RGB", (2, 2), (10, 250, 10))))
    page.wait_for_function("window.panel.caption.textContent === 'step 400 / 1000'")
    # A resumed run names its checkpoint in the caption.
    page.evaluate("""(png) => window.geodream.handlePreview({node: '7', image: png, step: 200, total: 1000,
                                                            note: 'resumed abc-seed3.pt at step 200'},
                                                           () => window.panel)""", _png_base64(image))
    page.wait_for_function("window.panel.caption.textContent === 'step 200 / 1000 · resumed abc-seed3.pt at step 200'")
    page.evaluate("""(png) => window.geodream.handlePreview({node: '7', image: 'data:image/png;base64,' + png,
                                                            step: 400, total: 1000}, () => window.panel)""",
                  _png_base64(Image.new("RGB", (2, 2), (10, 250, 10))))
    page.wait_for_function("window.panel.caption.textContent === 'step 400 / 1000'")
    page.wait_for_function("window.panel.image.complete && window.panel.image.naturalWidth === 2")
    np.testing.assert_array_equal(_pixels(page, "window.panel.image")[..., :3], np.full((2, 2, 3), (10, 250, 10)))


def test_preview_source_from_a_view_file(page):
    url = page.evaluate("""() => window.geodream.imageSource({filename: 'turn table.png', subfolder: 'geodream',
                                                               type: 'temp'}, (p) => '/api' + p)""")
    assert url == "/api/view?filename=turn+table.png&subfolder=geodream&type=temp"
    error = page.evaluate("() => { try { window.geodream.imageSource(42); } catch (e) { return e.message; } }")
    assert "must be PNG base64" in error


def test_score_panel_shows_the_uni3d_nodes_number(page):
    """The ui result of the real node (a stand-in scorer) goes through scoreResult into the panel, visibly."""
    from geodream_pack.nodes.uni3d import GeoDreamUni3DScore

    class Scorer:
        def embed_mesh(self, mesh, num_points, seed, z_up):
            return torch.tensor([[1.0, 0.0]])

        def embed_prompts(self, prompts, templates):
            return torch.nn.functional.normalize(torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.5]]), dim=1)

    box = trimesh.creation.box()
    mesh = TexturedMesh(torch.tensor(box.vertices).float(), torch.tensor(box.faces))
    ui = GeoDreamUni3DScore().score(Scorer(), mesh, "a box", "a cup\na car")["ui"]
    page.evaluate("""(output) => {
        const g = window.geodream, panel = new g.ScorePanel();
        document.getElementById('score').replaceChildren(panel.element);
        window.scoreText = g.scoreResult({text: ['no score here']});
        panel.show(g.scoreResult(output));
    }""", json.loads(json.dumps(ui)))
    assert page.evaluate("window.scoreText") is None  # a result without a score shows nothing
    # cosine([1,0], [0.6,0.8]) x100 = 60.00; the car (cosine 0.894) ranks above the box: rank 2 of 3.
    value = page.locator("#score .geodream-score div").first
    assert value.is_visible() and value.text_content() == "Uni3D 60.00"
    assert page.locator("#score .geodream-score div").nth(1).text_content() == "rank 2 of 3 prompts"
    box = value.bounding_box()
    assert box["width"] > 50 and box["height"] > 20  # large type, on screen


def test_comfyui_loads_no_vendored_file_as_an_extension():
    """ComfyUI imports every .js under the web directory as an editor extension: only the pack's own modules."""
    names = sorted(p.relative_to(PACK_ROOT / "web").as_posix() for p in (PACK_ROOT / "web").rglob("*.js"))
    assert names == ["geodream.js", "preview.js", "score.js", "seed_control.js", "viewer.js"]


def test_seed_controls_of_a_new_node_start_on_fixed(page):
    """Widgets as both frontends build them (1.27.10 and 1.58.1: the INT widget's linkedWidgets holds its control
    combo, made with "randomize"): every seed control is set to fixed, nothing else changes."""
    result = page.evaluate("""() => {
        const control = () => ({type: 'combo', name: 'control_after_generate', value: 'randomize',
                                options: {values: ['fixed', 'increment', 'decrement', 'randomize']}});
        const seed = {type: 'number', name: 'seed', value: 123, linkedWidgets: [control()]};
        const other = {type: 'number', name: 'steps', value: 5};
        const combo = {type: 'combo', name: 'matting', value: 'auto', options: {values: ['auto', 'none']}};
        const node = {widgets: [seed, seed.linkedWidgets[0], other, combo]};
        const set = window.geodream.fixSeedControls(node);
        return {set, control: seed.linkedWidgets[0].value, seed: seed.value, steps: other.value,
                matting: combo.value, none: window.geodream.fixSeedControls({}),
                found: window.geodream.seedControls(node).length};
    }""")
    assert result == {"set": 1, "control": "fixed", "seed": 123, "steps": 5, "matting": "auto", "none": 0,
                      "found": 1}
