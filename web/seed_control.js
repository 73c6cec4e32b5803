// GeoDream's seeds start on "control after generate: fixed" when a node is made from the node library.
//
// Why: a GeoDream graph runs for hours and resumes from checkpoints named after its inputs. The editor's default
// for a seed's control is "randomize": Run -> Cancel -> Run would then queue Multi-View Generate with a new seed,
// i.e. new views, a new cost volume and a refinement from step 0, orphaning the cancelled run's checkpoint.
// How: the frontend adds the control widget in the node's constructor with "randomize", whatever the input spec
// says in frontend 1.27.10 (the version ComfyUI 0.3.64 pins; there a string `control_after_generate` only names
// the widget), and with the spec's string only in newer ones (1.58.1). LiteGraph.createNode calls
// onNodeCreated right after the constructor and before a saved workflow's values are applied, so setting "fixed"
// here changes new nodes only: a saved workflow keeps the control it was saved with. A user who wants a new object
// picks "randomize" (or types another seed). No ComfyUI imports, so the browser test can load it.

export const SEED_CONTROL_DEFAULT = "fixed";

/** The control widgets ("fixed/increment/decrement/randomize") linked to a node's number widgets. */
export function seedControls(node) {
  return (node.widgets ?? []).flatMap((widget) => widget.linkedWidgets ?? [])
    .filter((control) => Array.isArray(control.options?.values) && control.options.values.includes("randomize")
                         && control.options.values.includes(SEED_CONTROL_DEFAULT));
}

/** Sets every seed control of a freshly created node to "fixed"; returns how many it set. */
export function fixSeedControls(node) {
  const controls = seedControls(node);
  for (const control of controls) control.value = SEED_CONTROL_DEFAULT;
  return controls.length;
}
