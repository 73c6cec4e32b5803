"""Where the nodes sit in the editor's node library: one folder per stage of the pipeline, under "GeoDream" (a "/"
in a ComfyUI category nests it). A node takes its stage's constant, e.g. ``CATEGORY = categories.PRIOR``;
tests/test_pack.py checks that every node has one of these."""

ROOT = "GeoDream"
LOADERS = f"{ROOT}/loaders"  # model files: Zero123++, MVDream, the prior, SD guidance, Uni3D
MULTIVIEW = f"{ROOT}/multi-view"  # views and their cameras from an image or a prompt
PRIOR = f"{ROOT}/prior"  # the cost volume and a quick look at its shape
REFINEMENT = f"{ROOT}/refinement"  # VSD refinement of the NeuS field
MESH = f"{ROOT}/mesh"  # DMTet fine-tuning, mesh export and hand-over to core 3D nodes
SCORE = f"{ROOT}/score"  # Uni3D
FILES = f"{ROOT}/cameras & files"  # camera rigs, and saving/loading what the stages hand on

ALL = (LOADERS, MULTIVIEW, PRIOR, REFINEMENT, MESH, SCORE, FILES)
