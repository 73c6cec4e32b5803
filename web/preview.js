// Live refinement preview: the long GeoDream nodes send "geodream.preview" events with a turntable image while
// they run; the latest one is shown on the sending node. No ComfyUI imports, so the browser test can load it.

export const PREVIEW_EVENT = "geodream.preview";

/** An image source from the event's `image`: PNG base64 (with or without a data: prefix) or a /view file dict. */
export function imageSource(image, viewURL) {
  if (typeof image === "string") {
    return image.startsWith("data:") ? image : `data:image/png;base64,${image}`;
  }
  if (image && typeof image.filename === "string") {
    const query = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "",
                                        type: image.type ?? "temp" });
    return viewURL(`/view?${query}`);
  }
  throw new Error("geodream.preview: 'image' must be PNG base64 or {filename, subfolder, type}");
}

/** An <img> with a "step / total" caption under it (and a note, e.g. the checkpoint a run resumed from);
 * `show` swaps in the latest image. */
export class PreviewPanel {
  constructor(doc = document) {
    this.element = doc.createElement("div");
    this.element.className = "geodream-preview";
    this.element.style.cssText = "display:flex;flex-direction:column;align-items:center;width:100%;height:100%;";
    this.image = doc.createElement("img");
    this.image.style.cssText = "flex:1;min-height:0;max-width:100%;object-fit:contain;";
    this.caption = doc.createElement("div");
    this.caption.style.cssText = "font:12px sans-serif;color:#aaa;";
    this.element.append(this.image, this.caption);
  }

  /** Resolves when the image has loaded (rejects if it cannot be decoded). */
  show(src, step, total, note = "") {
    const progress = Number.isFinite(step) ? `step ${step}${Number.isFinite(total) ? ` / ${total}` : ""}` : "";
    this.caption.textContent = [progress, note].filter(Boolean).join(" · ");
    return new Promise((resolve, reject) => {
      this.image.onload = () => resolve(this.image);
      this.image.onerror = () => reject(new Error(`geodream.preview: could not load ${src.slice(0, 80)}`));
      this.image.src = src;
    });
  }
}

/**
 * Handles one event's detail {node, image, step, total, note}: `panelFor(nodeId)` gives the node's PreviewPanel
 * (or null when the node is not on the current graph); `viewURL` turns a /view path into a server URL.
 */
export function handlePreview(detail, panelFor, viewURL = (path) => path) {
  const panel = panelFor(String(detail?.node));
  if (!panel) return null;
  return panel.show(imageSource(detail.image, viewURL), detail.step, detail.total, detail.note);
}
