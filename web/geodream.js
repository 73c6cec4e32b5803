// GeoDream editor extension: live refinement previews on the running node, and a 3D viewer on our nodes that
// report a saved mesh. Core SaveGLB / Preview3D keep their own viewer; ours only covers GeoDream nodes.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { PREVIEW_EVENT, PreviewPanel, handlePreview } from "./preview.js";
import { showGLB } from "./viewer.js";

const WIDGET_HEIGHT = 256;
const MESH_EXTENSIONS = /\.(glb|gltf)$/i;

function isOurs(nodeData) {
  return nodeData.name.startsWith("GeoDream");
}

function addPanel(node, name, element) {
  const widget = node.addDOMWidget(name, name, element, {
    serialize: false, hideOnZoom: false, getMinHeight: () => WIDGET_HEIGHT,
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

async function showMesh(node, file) {
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
  const viewer = node.geodreamViewer;
  viewer.view?.dispose();
  const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type ?? "output" });
  viewer.view = await showGLB(viewer.canvas, api.apiURL(`/view?${query}`));
}

app.registerExtension({
  name: "GeoDream.Editor",

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
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      // Our mesh savers report files the way core SaveGLB does: ui {"3d": [{filename, subfolder, type}]}.
      const mesh = (output?.["3d"] ?? []).find((f) => MESH_EXTENSIONS.test(f?.filename ?? ""));
      if (mesh) showMesh(this, mesh).catch((err) => console.warn("GeoDream viewer:", err));
    };
  },
});
