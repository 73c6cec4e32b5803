"""Check the pack in a running ComfyUI (started with the pack in custom_nodes/, e.g. `python main.py --cpu --listen
127.0.0.1`): our nodes are listed, the headless core stand-ins declare the same inputs as the server's nodes, every
example workflow queues and finishes, and the editor shows a workflow and our 3D viewer (screenshot).

    python bench/comfyui_check.py --url http://127.0.0.1:8188 [--overrides tiny.json] [--skip NAME ...]
                                  [--resume-check] [--editor [--thumbnails DIR] [--screenshot docs/editor.png]
                                  [--result-glb mesh.glb --result-screenshot docs/result.png]]

--overrides: {node type: {input: value}} applied to every queued workflow (e.g. small step counts for a CPU run).
--thumbnails: where the editor's template pictures go; `--thumbnails example_workflows` redraws the shipped ones
(otherwise they go to a temporary folder, so a check never rewrites tracked files unless asked).
--resume-check: queue text_to_3d_mvdream, interrupt it during refinement, queue it again with another seed (as the
editor's "randomize" does) and check that refinement resumed the interrupted run.
"""
import argparse
import io
import json
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from headless import workflow  # noqa: E402
from headless.api_to_ui import api_to_ui  # noqa: E402
from headless.core_nodes import CORE_NODES  # noqa: E402
from headless.run import node_classes  # noqa: E402


def call(url, path, body=None, headers=None):
    request = urllib.request.Request(url + path, data=body, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read() or b"null")


def spec_differences(name, ours, theirs) -> list[str]:
    """Differences between a stand-in's INPUT_TYPES and the server's /object_info "input" of the same node."""
    ours = json.loads(json.dumps(ours))  # tuples -> lists, as the server sends them
    out = []
    for group in ("required", "optional", "hidden"):
        mine, real = ours.get(group, {}), theirs.get(group, {})
        for key in sorted(set(mine) | set(real)):
            a, b = mine.get(key), real.get(key)
            if group == "hidden":  # the server sends "PROMPT" or ["PROMPT"], INPUT_TYPES says "PROMPT"
                a, b = (x[0] if isinstance(x, list) else x for x in (a, b))
            else:
                a, b = (x + [{}] if x is not None and len(x) == 1 else x for x in (a, b))
                if a is not None and b is not None and isinstance(a[0], list) and isinstance(b[0], list):
                    a, b = a[1:], b[1:]  # combo choices depend on the folder contents
            if a != b:
                out.append(f"{name}.{group}.{key}: ours {json.dumps(a)} vs server {json.dumps(b)}")
    return out


def submit(url, ui) -> dict:
    """Queue a UI workflow; ComfyUI's answer ({prompt_id} or {node_errors})."""
    api = workflow.ui_to_api(ui, node_classes())
    client = uuid.uuid4().hex
    body = json.dumps({"prompt": api, "client_id": client, "extra_data": {"extra_pnginfo": {"workflow": ui}}})
    return call(url, "/prompt", body.encode(), {"Content-Type": "application/json"})


def queue(url, ui, timeout=600):
    answer = submit(url, ui)
    if answer.get("node_errors"):  # ComfyUI drops invalid outputs and runs the rest: that is a failure here
        return {"status": {"status_str": f"invalid: {json.dumps(answer['node_errors'])[:400]}"}, "outputs": {}}
    return wait(url, answer["prompt_id"], timeout)


def wait(url, prompt_id, timeout=600) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        entry = call(url, f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def upload(url, name, data: bytes, kind="input"):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n{kind}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return call(url, "/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


FIT_VIEW = """() => {
    const nodes = window.app.graph._nodes, canvas = window.app.canvas;
    const x0 = Math.min(...nodes.map((n) => n.pos[0])), y0 = Math.min(...nodes.map((n) => n.pos[1] - 30));
    const x1 = Math.max(...nodes.map((n) => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map((n) => n.pos[1] + n.size[1]));
    const rect = canvas.canvas.getBoundingClientRect(), margin = 120;  // clear of the toolbars
    const scale = Math.min((rect.width - 2 * margin) / (x1 - x0), (rect.height - 2 * margin) / (y1 - y0), 1.25);
    canvas.ds.scale = scale;
    canvas.ds.offset = [(rect.width / scale - (x1 - x0)) / 2 - x0, (rect.height / scale - (y1 - y0)) / 2 - y0];
    canvas.setDirty(true, true);
    const pad = 16 / scale;  // the graph's own rectangle on screen, for the thumbnail
    return {x: rect.left + (x0 - pad + canvas.ds.offset[0]) * scale, y: rect.top + (y0 - pad + canvas.ds.offset[1]) * scale,
            width: (x1 - x0 + 2 * pad) * scale, height: (y1 - y0 + 2 * pad) * scale};
}"""

DEMO = """async (glb) => {
    const node = window.app.graph._nodes.find((n) => n.type.startsWith('GeoDream'));
    if (!node) return null;
    node.onExecuted({'3d': [{filename: glb.name, subfolder: glb.subfolder, type: glb.type}]});

    const c = document.createElement('canvas'); c.width = c.height = 64;
    const g = c.getContext('2d'); g.fillStyle = '#3a7'; g.fillRect(0, 0, 64, 64);
    window.app.api.dispatchCustomEvent('geodream.preview',
        {node: String(node.id), image: c.toDataURL('image/png'), step: 300, total: 1000});
    return node.id;
}"""


RUN_IN_EDITOR = """async ({ui, interruptAt}) => {
    // Queue from the editor as a user does (so seed controls act), optionally cancelling when the refinement node
    // reports step `interruptAt`; resolves to how the run ended and the seed each node used. ui null: the graph the
    // editor holds.
    const app = window.app, api = app.api;
    if (ui) await app.loadGraphData(ui);
    const refine = app.graph._nodes.find((n) => n.type === 'GeoDreamVSDRefineNeuS');
    const seed = () => refine?.widgets.find((w) => w.name === 'seed')?.value;
    const used = seed();
    // The seed of every node as queued (a control acts after queueing).
    const seeds = Object.fromEntries(app.graph._nodes.filter((n) => n.widgets?.some((w) => w.name === 'seed'))
        .map((n) => [n.type, n.widgets.find((w) => w.name === 'seed').value]));
    const ended = new Promise((resolve) => {
        const done = (kind) => () => resolve(kind);
        for (const kind of ['execution_success', 'execution_interrupted', 'execution_error']) {
            api.addEventListener(kind, done(kind), {once: true});
        }
    });
    let first = null;  // the refinement's first progress value: the step it started (or resumed) at
    const onProgress = ({detail}) => {
        if (String(detail.node) === String(refine.id) && first === null) first = detail.value;
        if (interruptAt && String(detail.node) === String(refine.id) && detail.value >= interruptAt) {
            api.removeEventListener('progress', onProgress);
            api.interrupt();
        }
    };
    api.addEventListener('progress', onProgress);
    await app.queuePrompt(0, 1);
    const end = await ended;
    api.removeEventListener('progress', onProgress);
    return {end, used, next: seed(), seeds, first,
            caption: refine?.geodreamPreview?.caption?.textContent ?? null};
}"""

# The 4-view text graph, node by node as a user builds it from the node library: each node made by LiteGraph (so
# every widget, seeds and their controls included, starts at what a new node gets), then only the widgets named
# here set, and the links made by socket name. {key: [type, {widget: value}]}, [[from, output slot, to, input]].
LIBRARY_GRAPH = {
    "nodes": {
        "mv": ["GeoDreamLoadMVDream", {"model": "checkpoints/sd-v2.1-base-4view.pt"}],
        "views": ["GeoDreamMultiViewGenerate", {"prompt": "a ceramic owl"}],
        "prior": ["GeoDreamLoadPrior", {}],
        "volume": ["GeoDreamBuildCostVolume", {}],
        "sd": ["GeoDreamLoadVSDGuidance", {"model": "diffusers/stable-diffusion-2-1-base",
                                           "lora_model": "diffusers/stable-diffusion-2-1"}],
        "refine": ["GeoDreamVSDRefineNeuS", {"prompt": "a ceramic owl", "preview_every": 1, "checkpoint_every": 1}],
        "show": ["PreviewImage", {}],
    },
    "links": [["mv", 0, "views", "mv_model"], ["views", 0, "volume", "views"], ["views", 1, "volume", "cameras"],
              ["prior", 0, "volume", "prior"], ["volume", 0, "refine", "cost_volume"], ["sd", 0, "refine", "guidance"],
              ["refine", 1, "show", "images"]],
}

BUILD_FROM_LIBRARY = """({nodes, links, overrides}) => {
    const app = window.app, LG = window.LiteGraph ?? globalThis.LiteGraph;
    app.graph.clear();
    const made = {};
    let x = 0;
    for (const [key, [type, widgets]] of Object.entries(nodes)) {
        const node = LG.createNode(type);
        node.pos = [x, 100]; x += 360;
        app.graph.add(node);
        for (const [name, value] of Object.entries({...widgets, ...(overrides[type] ?? {})})) {
            const widget = node.widgets?.find((w) => w.name === name);
            if (!widget) throw new Error(`${type} has no widget ${name}`);
            widget.value = value;
        }
        made[key] = node;
    }
    for (const [from, slot, to, input] of links) {
        made[from].connect(slot, made[to], made[to].inputs.findIndex((i) => i.name === input));
    }
    // What a new node's seeds start on: {type: [seed, control]}
    return Object.fromEntries(Object.values(made).filter((n) => n.widgets?.some((w) => w.name === 'seed'))
        .map((n) => { const w = n.widgets.find((w) => w.name === 'seed');
                      return [n.type, [w.value, w.linkedWidgets?.[0]?.value ?? null]]; }));
}"""


def resume_in_library_graph(page, overrides) -> tuple[bool, str]:
    """A graph built from the node library (seeds and their controls as a new node has them), Run, Cancel during
    refinement, Run: the second run keeps every seed and resumes the cancelled run (it starts at the step the first
    reached, and its preview caption names the checkpoint). Then Multi-View Generate's control set to randomize:
    the next Run still resumes (the control acts after queueing), the one after makes a new object (new views,
    refinement from step 0). Every run after the first is cancelled at its first refinement step, so no check waits
    for a run to end."""
    graph = json.loads(json.dumps(LIBRARY_GRAPH))
    # A prompt of its own, so no run left by an earlier check is found.
    tag = uuid.uuid4().hex[:8]
    for key in ("views", "refine"):
        graph["nodes"][key][1]["prompt"] += f" ({tag})"
    defaults = page.evaluate(BUILD_FROM_LIBRARY, {**graph, "overrides": overrides})
    runs = [page.evaluate(RUN_IN_EDITOR, {"ui": None, "interruptAt": 2})]
    runs.append(page.evaluate(RUN_IN_EDITOR, {"ui": None, "interruptAt": 1}))
    page.evaluate("""() => { const n = window.app.graph._nodes.find((n) => n.type === 'GeoDreamMultiViewGenerate');
                             n.widgets.find((w) => w.name === 'seed').linkedWidgets[0].value = 'randomize'; }""")
    runs += [page.evaluate(RUN_IN_EDITOR, {"ui": None, "interruptAt": 1}) for _ in range(2)]
    first, second, third, fourth = runs
    ok = (all(control == "fixed" for _, control in defaults.values())
          and all(r["end"] == "execution_interrupted" for r in runs)
          and first["seeds"] == second["seeds"] == third["seeds"] and second["first"] >= 2
          and "resumed" in (second["caption"] or "") and third["first"] >= 2
          and fourth["seeds"]["GeoDreamMultiViewGenerate"] != first["seeds"]["GeoDreamMultiViewGenerate"]
          and fourth["first"] == 0)
    return ok, f"new nodes' seeds (value, control) {defaults}; runs: " + "; ".join(
        f"{r['end']}, seeds {r['seeds']}, refinement from step {r['first']}, caption {r['caption']!r}" for r in runs)


CANCEL_IN_RENDER = """async ({waitAfterLastStep}) => {
    // Run the graph the editor holds; once refinement has done its last step (its turntable is rendering), wait,
    // then Cancel: milliseconds from /interrupt to execution_interrupted.
    const app = window.app, api = app.api;
    const refine = app.graph._nodes.find((n) => n.type === 'GeoDreamVSDRefineNeuS');
    let asked = null;
    const ended = new Promise((resolve) => {
        for (const kind of ['execution_success', 'execution_interrupted', 'execution_error']) {
            api.addEventListener(kind, () => resolve({kind, ms: asked === null ? null : performance.now() - asked}),
                                 {once: true});
        }
    });
    const onProgress = ({detail}) => {
        if (String(detail.node) === String(refine.id) && detail.value >= detail.max) {
            api.removeEventListener('progress', onProgress);
            setTimeout(() => { asked = performance.now(); api.interrupt(); }, waitAfterLastStep);
        }
    };
    api.addEventListener('progress', onProgress);
    await app.queuePrompt(0, 1);
    return await ended;
}"""


def cancel_inside_render(page, overrides) -> tuple[bool, str]:
    """Cancel while refinement renders its turntable (one step at 32 px, then 8 frames at the resolution): the
    latency from /interrupt to execution_interrupted."""
    graph = json.loads(json.dumps(LIBRARY_GRAPH))
    graph["nodes"]["refine"][1].update({"prompt": f"a ceramic owl ({uuid.uuid4().hex[:8]})", "preview_every": 0})
    page.evaluate(BUILD_FROM_LIBRARY, {**graph, "overrides": overrides})
    result = page.evaluate(CANCEL_IN_RENDER, {"waitAfterLastStep": 5000})
    return result["kind"] == "execution_interrupted" and result["ms"] is not None, f"{result}"


def resume_in_editor(page, ui) -> tuple[bool, str]:
    """Run, Cancel (during refinement), Run again with the refinement seed control on "randomize": the second run
    resumes the first one's checkpoint, and its preview caption says so."""
    for node in ui["nodes"]:
        if node["type"] == "GeoDreamVSDRefineNeuS":
            slot = _widget_slot(node_classes()[node["type"]], "seed")
            node["widgets_values"][slot + 1] = "randomize"
            # A prompt of its own, so no run left by an earlier check (same inputs, same seed) is found finished.
            prompt = _widget_slot(node_classes()[node["type"]], "prompt")
            node["widgets_values"][prompt] += f" ({uuid.uuid4().hex[:8]})"
    first = page.evaluate(RUN_IN_EDITOR, {"ui": ui, "interruptAt": 2})
    # Load the graph as the editor now holds it (the seed randomised after queueing), then run it again.
    now = page.evaluate("() => window.app.graph.serialize()")
    second = page.evaluate(RUN_IN_EDITOR, {"ui": now, "interruptAt": 0})
    resumed = (first["end"] == "execution_interrupted" and second["end"] == "execution_success"
               and first["used"] != second["used"] and f"its seed {first['used']}, not {second['used']}"
               in (second["caption"] or ""))
    return resumed, f"first run {first}, second run {second}"


SCORE_ON_NODE = """() => {
    const node = window.app.graph._nodes.find((n) => n.type === 'GeoDreamUni3DScore');
    const element = node?.geodreamScore?.value;
    const box = element?.getBoundingClientRect();
    const shown = window.app.graph._nodes.filter((n) => n.type === 'PreviewAny')
        .map((n) => n.widgets?.map((w) => String(w.value ?? '')).join(' '));
    return {text: element?.textContent ?? null, visible: !!box && box.width > 0 && box.height > 0, previewAny: shown};
}"""


def score_in_editor(page, ui, screenshot: Path) -> tuple[bool, str]:
    """Queue the Uni3D template from the editor: the score appears on its node, and in the Preview Any nodes."""
    result = page.evaluate(RUN_IN_EDITOR, {"ui": ui, "interruptAt": 0})
    page.evaluate(FIT_VIEW)
    page.wait_for_timeout(1500)
    shown = page.evaluate(SCORE_ON_NODE)
    page.screenshot(path=str(screenshot))
    ok = (result["end"] == "execution_success" and shown["visible"] and (shown["text"] or "").startswith("Uni3D ")
          and any(shown["text"].split()[1] in text for text in shown["previewAny"]))
    return ok, f"{result['end']}; on the node {shown}"


def preview_in_core_viewer(page, url, glb: Path, screenshot: Path):
    """Core Preview3D showing a GLB (e.g. a pipeline result) from the output folder, queued from the editor."""
    name = upload(url, glb.name, glb.read_bytes(), "output")["name"]
    ui = api_to_ui({"1": {"class_type": "Preview3D", "inputs": {"model_file": name}}}, node_classes())
    page.evaluate("async (ui) => { await window.app.loadGraphData(ui); await window.app.queuePrompt(0, 1); }", ui)
    page.wait_for_timeout(8000)
    page.evaluate(FIT_VIEW)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(screenshot))


THUMBNAIL_SIZE = 400  # the template browser shows square cards, as the core templates' pictures are


def square_thumbnail(image):
    """The graph's picture centred on a square of the editor's background colour, so a card shows all of it."""
    from PIL import Image

    image = image.copy()
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    square = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), image.getpixel((0, 0)))
    square.paste(image, ((THUMBNAIL_SIZE - image.width) // 2, (THUMBNAIL_SIZE - image.height) // 2))
    return square


def editor(url, workflows, thumbnails, screenshot=None, result_glb=None, result_screenshot=None, runs=None):
    """Loads each workflow in the editor and saves a thumbnail of its graph; then, with the first one, shows our
    viewer on its first GeoDream node (a box, as if the node had saved it) and a live preview sent through the
    editor's event channel, and saves that as ``screenshot``. ``runs``: {name: (check(page, ui, ...), ui, args)}
    run in the page after that. Returns what the page reports, the runs' (ok, detail), and the page's errors."""
    import tempfile

    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from tests.browser.support import launch, textured_box_glb

    glb = upload(url, "geodream_check_box.glb", textured_box_glb(np.array([0.8, 0.8, 0.8]), np.zeros(3)))
    # No first-run template browser or minimap over the graph.
    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.Minimap.Visible", False)):
        call(url, f"/settings/{setting}", json.dumps(value).encode(), {"Content-Type": "application/json"})
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = launch(pw, profile, 1280, 720)
        page = context.new_page()
        errors = []
        page.on("console", lambda m: (m.type == "error" or "invalid workflow" in m.text.lower()) and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: r.status >= 400 and errors.append(f"{r.status} {r.url}"))
        page.goto(url)
        page.wait_for_function("window.app && window.app.graph", timeout=120_000)
        page.wait_for_timeout(2000)
        page.keyboard.press("Escape")
        for ui, thumbnail in zip(workflows, thumbnails):
            page.evaluate("async (ui) => { await window.app.loadGraphData(ui); }", ui)
            clip = page.evaluate(FIT_VIEW)
            page.wait_for_timeout(1000)
            image = Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")
            square_thumbnail(image).save(thumbnail, quality=85)
        state = None
        if screenshot:
            page.evaluate("async (ui) => { await window.app.loadGraphData(ui); }", workflows[0])
            node_id = page.evaluate(DEMO, glb)
            page.wait_for_timeout(1000)
            page.evaluate("""(id) => {  // the node grew: move what now sits under it
                const node = window.app.graph.getNodeById(id), bottom = node.pos[1] + node.size[1] + 60;
                for (const other of window.app.graph._nodes) {
                    if (other !== node && other.pos[1] > node.pos[1] && other.pos[0] < node.pos[0] + node.size[0]) {
                        other.pos[1] = bottom;
                    }
                }
            }""", node_id)
            page.evaluate(FIT_VIEW)
            page.wait_for_timeout(3000)
            state = page.evaluate("""(id) => {
                const node = window.app.graph.getNodeById(id);
                return {node: node?.type, viewer: !!node?.geodreamViewer?.view,
                        preview: node?.geodreamPreview?.caption?.textContent ?? null};
            }""", node_id)
            page.screenshot(path=str(screenshot))
            Image.open(screenshot).convert("RGB").quantize(128).save(screenshot, optimize=True)
        if result_glb:
            preview_in_core_viewer(page, url, result_glb, result_screenshot)
        outcomes = {name: check(page, ui, *rest) for name, (check, ui, *rest) in (runs or {}).items()}
        context.close()
    return state, outcomes, errors


def _widget_slot(node_class, name) -> int:
    """Position of a widget's value in widgets_values (seed-like widgets are followed by their control value)."""
    slot = 0
    for widget, spec in workflow.widget_names(node_class):
        if widget == name:
            return slot
        slot += 2 if workflow.has_control_after_generate(widget, spec) else 1
    raise KeyError(f"{node_class.__name__} has no widget {name!r}")


def with_overrides(ui, overrides: dict) -> dict:
    """``ui`` with {node type: {input: value}} written into its nodes' widget values."""
    for node in ui["nodes"]:
        if node["type"] in overrides:
            values = list(node["widgets_values"])
            for name, value in overrides[node["type"]].items():
                slot = _widget_slot(node_classes()[node["type"]], name)
                values += [None] * (slot + 1 - len(values))  # a saved workflow may predate appended widgets
                values[slot] = value
            node["widgets_values"] = values
    return ui


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--editor", action="store_true",
                        help="also open the editor: thumbnails of the graphs, our viewer and preview, and the "
                             "Uni3D template queued from the editor (its score on the node)")
    parser.add_argument("--thumbnails", type=Path, help="with --editor: folder for the template pictures "
                        "(example_workflows redraws the shipped ones; default: a temporary folder)")
    parser.add_argument("--resume-check", action="store_true", help="with --editor: Run, Cancel, Run with the "
                        "refinement seed on randomize; the second run must resume the first")
    parser.add_argument("--no-score-check", action="store_true", help="with --editor: leave out the Uni3D template "
                        "(a server without the Uni3D twins)")
    parser.add_argument("--library-resume-check", action="store_true", help="with --editor: a graph built from the "
                        "node library, Run, Cancel, Run: the second run resumes; with randomize, a new object")
    parser.add_argument("--cancel-check", type=Path, help="with --editor: JSON {node type: {input: value}} for a "
                        "library-built graph whose refinement's turntable takes a while; Cancel inside it, timed")
    parser.add_argument("--screenshot", type=Path, help="with --editor: the README screenshot (PNG)")
    parser.add_argument("--result-glb", type=Path, help="with --editor: a GLB to show in core Preview3D ...")
    parser.add_argument("--result-screenshot", type=Path, default=Path("result.png"), help="... saved here")
    parser.add_argument("--overrides", type=Path, help="JSON {node type: {input: value}} for every queued workflow")
    parser.add_argument("--skip", nargs="*", default=[], help="example workflows (file stems) not to queue")
    args = parser.parse_args()
    info = call(args.url, "/object_info")
    ours = sorted(k for k in node_classes() if k not in CORE_NODES)
    missing = [k for k in ours if k not in info]
    print(f"our nodes on the server: {len(ours) - len(missing)}/{len(ours)}" + (f", missing {missing}" if missing else ""))
    for name, cls in CORE_NODES.items():
        diffs = spec_differences(name, cls.INPUT_TYPES(), info[name]["input"]) if name in info else ["not on server"]
        print(f"core {name}: " + ("same inputs" if not diffs else "\n  " + "\n  ".join(diffs)))
    ok = not missing
    templates = call(args.url, "/api/workflow_templates")
    print(f"templates listed by the editor: {templates}")
    overrides = json.loads(args.overrides.read_text()) if args.overrides else {}
    for path in sorted((ROOT / "example_workflows").glob("*.json")):
        if path.stem in args.skip:
            print(f"{path.name}: skipped")
            continue
        entry = queue(args.url, with_overrides(workflow.load(path), overrides))
        status = entry["status"]
        files = [f["filename"] for out in entry["outputs"].values() for v in out.values() if isinstance(v, list)
                 for f in v if isinstance(f, dict) and "filename" in f]
        print(f"{path.name}: {status['status_str']}, outputs {files}")
        ok &= status["status_str"] == "success"
    if args.editor:
        paths = sorted((ROOT / "example_workflows").glob("*.json"))
        folder = args.thumbnails or Path(tempfile.mkdtemp(prefix="geodream-thumbnails-"))
        folder.mkdir(parents=True, exist_ok=True)
        runs = {}
        if not args.no_score_check:
            runs["Uni3D score on the node"] = (score_in_editor, with_overrides(
                workflow.load(ROOT / "example_workflows" / "mesh_to_uni3d_score.json"), overrides), folder / "score.png")
        if args.library_resume_check:
            runs["resume after cancel in a graph built from the library"] = (
                lambda page, _ui: resume_in_library_graph(page, overrides), None)
        if args.cancel_check:
            runs["Cancel inside a render"] = (
                lambda page, _ui: cancel_inside_render(page, json.loads(args.cancel_check.read_text())), None)
        if args.resume_check:
            runs["resume after cancel, seed randomised"] = (resume_in_editor, with_overrides(
                workflow.load(ROOT / "example_workflows" / "text_to_3d_mvdream.json"), overrides))
        state, outcomes, errors = editor(args.url, [workflow.load(p) for p in paths],
                                         [folder / p.with_suffix(".jpg").name for p in paths],
                                         args.screenshot, args.result_glb, args.result_screenshot, runs)
        print(f"editor: thumbnails in {folder}; demo {state}")
        for name, (passed, detail) in outcomes.items():
            print(f"  {name}: {'ok' if passed else 'FAILED'}: {detail}")
            ok &= passed
        ours = [line for line in errors if "geodream" in line.lower() or "invalid workflow" in line.lower()]
        print(f"  browser errors: {len(errors)} in all (the editor's own 404s for absent user files among them), "
              f"{len(ours)} about GeoDream or our workflows" + "".join(f"\n    {line}" for line in ours))
        ok &= not ours
        if args.screenshot:
            ok &= state["viewer"] and state["preview"] == "step 300 / 1000"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
