"""python -m headless.evaluate_uni3d --meshes DIR --prompts FILE --out DIR [--uni3d FILE --clip FILE]

Uni3D score of a folder of meshes (.glb, .gltf, .obj, .ply, .off), and the R-precision-style table of GeoDream's
paper: each mesh's own prompt ranked against every prompt of the list. Writes uni3d_scores.csv and uni3d_scores.md.

The prompt file has one prompt per line. A mesh goes with the prompt whose words its file name spells
("a_corgi_00001_.glb" -> "a corgi"), or a line "FILE_NAME<TAB>prompt" pairs them explicitly; prompts without a mesh
stay in the list as distractors. Files are taken as Y up (glTF); --z-up for meshes in the pack's frame."""
from __future__ import annotations

import argparse
import csv
import functools
import io
import re
import sys
from pathlib import Path

import torch

from .pack import load_pack

GeoDreamError = load_pack().geodream_ops.errors.GeoDreamError
COUNTER = re.compile(r"_\d+_?$")  # ComfyUI's file counter, "_00001_"


def slug(text: str) -> str:
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def read_prompts(path: Path) -> tuple[list[str], dict[str, str]]:
    """All prompts in file order, and the explicit mesh-file -> prompt pairs."""
    prompts, pairs = [], {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, tab, prompt = line.partition("\t")
        prompt = (prompt if tab else name).strip()
        if prompt:
            if tab:
                pairs[name.strip()] = prompt
            if prompt not in prompts:
                prompts.append(prompt)
    return prompts, pairs


def match_prompts(meshes: list[Path], prompts: list[str], pairs: dict[str, str]) -> list[int]:
    by_slug = {slug(p): i for i, p in enumerate(prompts)}
    targets, unmatched = [], []
    for mesh in meshes:
        prompt = pairs.get(mesh.name, pairs.get(mesh.stem))
        index = prompts.index(prompt) if prompt else by_slug.get(slug(COUNTER.sub("", mesh.stem)))
        if index is None:
            unmatched.append(mesh.name)
        targets.append(index)
    if unmatched:
        raise ValueError(f"no prompt for {', '.join(unmatched)}: name the file after its prompt's words "
                         "or add a line 'FILE_NAME<TAB>prompt' to the prompt file")
    return targets


def _model_path(name: str) -> Path:
    """A path as given, else a file name in models/geodream/."""
    return Path(name) if Path(name).exists() else load_pack().nodes.host.find_model("geodream", name)


def write_table(table, out: Path) -> list[Path]:
    atomic_write = load_pack().geodream_ops.atomic.atomic_write
    rows = table.rows()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    written = []
    for name, text in (("uni3d_scores.csv", buffer.getvalue()), ("uni3d_scores.md", table.markdown())):
        with atomic_write(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(out / name)
    return written


def load_scorer_files(uni3d: str, clip: str, clip_model: str):
    """The scorer from model files (paths, or names in models/geodream/), on this process's device."""
    ops = load_pack().geodream_ops
    device = load_pack().nodes.host.device()
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return ops.uni3d.uni3d_score.load_scorer(_model_path(uni3d), _model_path(clip), clip_model, device, dtype)


def embed(load_scorer, meshes: list[Path], prompts: list[str], num_points: int, seed: int, templates: str,
          z_up: bool, log=print) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shape embeddings [M, D] of the mesh files and, when ``prompts`` is not empty, text embeddings [P, D], with the
    scorer ``load_scorer()`` returns. The one path every embedding takes, in this process or as a Ray task."""
    ops = load_pack().geodream_ops
    scorer = load_scorer()
    shapes = []
    for step, path in enumerate(meshes, 1):
        log(f"[{step}/{len(meshes)}] {path.name}")
        shapes.append(scorer.embed_mesh(ops.mesh.mesh_import.load_mesh(path, y_up=not z_up), num_points, seed, True))
    text = scorer.embed_prompts(prompts, ops.uni3d.uni3d_text.TEMPLATE_SETS[templates]) if prompts else None
    return torch.cat(shapes), text


def rank(load_scorer, meshes: list[Path], names: list[str], prompts: list[str], targets: list[int],
         num_points: int, seed: int, templates: str, z_up: bool, tasks: int = 1, log=print):
    """The ranking table (uni3d_score.RankingTable) of ``meshes`` against ``prompts``. With ``tasks`` > 1 the meshes
    are embedded in that many Ray tasks (headless.ray_cluster.map_tasks on the connected cluster, one GPU each when it has
    GPUs), each loading the scorer once; the prompts go with the first."""
    options = (num_points, seed, templates, z_up)
    if tasks > 1 and len(meshes) > 1:
        from .ray_cluster import map_tasks

        size = -(-len(meshes) // tasks)
        chunks = [meshes[i:i + size] for i in range(0, len(meshes), size)]
        parts = map_tasks(embed, [(load_scorer, chunk, prompts if i == 0 else [], *options)
                                  for i, chunk in enumerate(chunks)])
        shapes, text = torch.cat([part[0] for part in parts]), parts[0][1]
    else:
        shapes, text = embed(load_scorer, meshes, prompts, *options, log=log)
    ops = load_pack().geodream_ops
    return ops.uni3d.uni3d_score.RankingTable(names, prompts, ops.uni3d.uni3d_score.similarity(shapes, text), torch.tensor(targets))


def evaluate(meshes_dir: Path, prompts_file: Path, out: Path, load_scorer, num_points: int, seed: int,
             templates: str, z_up: bool, tasks: int = 1, log=print) -> list[Path]:
    suffixes = load_pack().geodream_ops.mesh.mesh_import.SUFFIXES
    meshes = sorted(p for p in Path(meshes_dir).iterdir() if p.suffix.lower() in suffixes)
    if not meshes:
        raise ValueError(f"no mesh files ({', '.join(suffixes)}) in {meshes_dir}")
    prompts, pairs = read_prompts(Path(prompts_file))
    targets = match_prompts(meshes, prompts, pairs)
    table = rank(load_scorer, meshes, [p.name for p in meshes], prompts, targets, num_points, seed, templates, z_up,
                 tasks, log)
    return write_table(table, Path(out))


def main(argv=None) -> int:
    ops = load_pack().geodream_ops
    parser = argparse.ArgumentParser(prog="python -m headless.evaluate_uni3d", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", required=True, type=Path, help="folder of mesh files")
    parser.add_argument("--prompts", required=True, type=Path, help="prompt file, as described above")
    parser.add_argument("--out", required=True, type=Path, help="folder for uni3d_scores.csv and .md")
    parser.add_argument("--uni3d", required=True, help="Uni3D model.pt: a path, or a name in models/geodream/")
    parser.add_argument("--clip", default="EVA02-E-14-plus-text.safetensors",
                        help="EVA02-E-14-plus open_clip weights (its text tower, as `python -m headless.models "
                             "download eva02-e-14-plus-text` keeps it, or the full file): a path, or a name in "
                             "models/geodream/")
    parser.add_argument("--clip-model", default=ops.uni3d.uni3d_text.CLIP_MODEL, help="open_clip architecture name")
    parser.add_argument("--num-points", type=int, default=ops.uni3d.point_sampling.UNI3D_NUM_POINTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--templates", choices=list(ops.uni3d.uni3d_text.TEMPLATE_SETS), default="prompt as written")
    parser.add_argument("--z-up", action="store_true", help="meshes are in the pack's frame (Z up), not glTF's")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS", help="embed the meshes as Ray tasks, "
                        "one per GPU (per CPU without GPUs): on this machine, or on the cluster at ADDRESS (needs "
                        "requirements-batch.txt; see headless.batch)")
    args = parser.parse_args(argv)
    try:
        # Full paths (a missing file stops here, before any worker starts): a Ray worker may have other folders.
        load_scorer = functools.partial(load_scorer_files, str(_model_path(args.uni3d).resolve()),
                                        str(_model_path(args.clip).resolve()), args.clip_model)
        tasks, ray = 1, None
        if args.ray:
            from .ray_cluster import connect, parallel_slots

            ray = connect(None if args.ray == "local" else args.ray)
            tasks = parallel_slots(ray)
        try:
            written = evaluate(args.meshes, args.prompts, args.out, load_scorer, args.num_points, args.seed,
                               args.templates, args.z_up, tasks)
        finally:
            if ray is not None:
                ray.shutdown()
    except (OSError, ValueError, GeoDreamError) as exc:  # a clear one-line error for the command line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
