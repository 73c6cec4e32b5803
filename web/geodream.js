// GeoDream editor extension: live refinement previews on the running node, the Uni3D score on the node that
// computed it, a 3D viewer on our nodes that report a saved mesh (GLB or OBJ), and seeds that start on "fixed" in
// nodes made from the library (seed_control.js). Core SaveGLB / Preview3D keep their own viewer; ours only covers
// GeoDream nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { PREVIEW_EVENT, PreviewPanel, handlePreview } from "./preview.js";
import { ScorePanel, scoreResult } from "./score.js";
import { fixSeedControls } from "./seed_control.js";

const WIDGET_HEIGHT = 256;
const SCORE_HEIGHT = 64;

function isOurs(nodeData) {
  return nodeData.name.startsWith("GeoDream");
}

function addPanel(node, name, element, height = WIDGET_HEIGHT) {
  const widget = node.addDOMWidget(name, name, element, {
    serialize: false, hideOnZoom: false, getMinHeight: () => height,
  });
  // Not a workflow value: keeps widgets_values positional for the saved workflow.
  widget.serialize = false;
  node.setSize([Math.max(node.size[0], 300), node.computeSize()[1]]);
  return widget;
}

function previewPanel(node) {
  if (!node.geodreamPreview) {
    node.geodreamPreview = new PreviewPanel();
    addPanel(node, "geodream_preview", node.geodreamPreview.element);
  }
  return node.geodreamPreview;
}

function showScore(node, result) {
  if (!node.geodreamScore) {
    node.geodreamScore = new ScorePanel();
    addPanel(node, "geodream_score", node.geodreamScore.element, SCORE_HEIGHT);
  }
  node.geodreamScore.show(result);
}

/** The mesh format a file name stands for ("glb", "gltf" or "obj"), or null for anything else. */
function meshFormat(filename) {
  return /\.(glb|gltf|obj)$/i.exec(filename ?? "")?.[1].toLowerCase() ?? null;
}

/** A /view URL of a file in the folder of `file` ({filename, subfolder, type}); the name goes last (see viewer.js). */
function fileURL(file) {
  const query = new URLSearchParams({ type: file.type ?? "output", subfolder: file.subfolder ?? "" });
  return (name) => api.apiURL(`/view?${query}&filename=${encodeURIComponent(name)}`);
}

async function showMesh(node, file, format) {
  // three.js loads with the first mesh shown, not with the editor.
  const viewer = await import("./viewer.js");
  if (!node.geodreamViewer) {
    const canvas = document.createElement("canvas");
    canvas.style.cssText = "width:100%;height:100%;display:block;";
    addPanel(node, "geodream_viewer", canvas);
    node.geodreamViewer = { canvas, view: null };
    const onRemoved = node.onRemoved;
    node.onRemoved = function () {
      node.geodreamViewer.view?.dispose();
      return onRemoved?.apply(this, arguments);
    };
  }
  const state = node.geodreamViewer;
  state.view?.dispose();
  const urlFor = fileURL(file);
  state.view = await viewer.showMesh(state.canvas, urlFor(file.filename), { format, fileURL: urlFor });
}

app.registerExtension({
  // Under the pack's registry namespace (pyproject.toml [tool.comfy] PublisherId), as comfy-test lint asks.
  name: "geodream.Editor",

  setup() {
    api.addEventListener(PREVIEW_EVENT, ({ detail }) => {
      handlePreview(detail, (id) => {
        const node = app.graph?.getNodeById(id) ?? app.graph?.getNodeById(Number(id));
        return node ? previewPanel(node) : null;
      }, (path) => api.apiURL(path))?.catch((err) => console.warn(err));
    });
  },

  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!isOurs(nodeData)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      fixSeedControls(this);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const score = scoreResult(output);
      if (score) showScore(this, score);
      // Our mesh savers report files the way core SaveGLB does: ui {"3d": [{filename, subfolder, type}]}.
      const mesh = (output?.["3d"] ?? []).find((f) => meshFormat(f?.filename));
      if (mesh) showMesh(this, mesh, meshFormat(mesh.filename)).catch((err) => console.warn("GeoDream viewer:", err));
    };
  },
});
