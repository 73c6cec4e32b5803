// The Uni3D score on the node that computed it. GeoDreamUni3DScore reports {geodream_score: [{score, rank,
// prompts}], text: [report]} in its ui result; the editor shows neither by itself. No ComfyUI imports, so the
// browser test can load it.

/** The node's result from an executed message's output, or null when it carries none. */
export function scoreResult(output) {
  const result = output?.geodream_score?.[0];
  return Number.isFinite(result?.score) ? result : null;
}

/** The score in large type, with the prompt's rank among the distractors under it (when there were any). */
export class ScorePanel {
  constructor(doc = document) {
    this.element = doc.createElement("div");
    this.element.className = "geodream-score";
    this.element.style.cssText = "display:flex;flex-direction:column;align-items:center;justify-content:center;" +
      "width:100%;height:100%;font-family:sans-serif;color:#ddd;";
    this.value = doc.createElement("div");
    this.value.style.cssText = "font-size:28px;font-weight:bold;line-height:1.1;";
    this.detail = doc.createElement("div");
    this.detail.style.cssText = "font-size:12px;color:#aaa;";
    this.element.append(this.value, this.detail);
  }

  show({ score, rank, prompts }) {
    this.value.textContent = `Uni3D ${score.toFixed(2)}`;
    this.detail.textContent = prompts > 1 ? `rank ${rank} of ${prompts} prompts` : "cosine similarity x100";
  }
}
