"""Uni3D score nodes: load the Uni3D point encoder with its CLIP text encoder, and score a mesh against a prompt."""
import torch

from ..geodream_ops.mesh.textured_mesh import TexturedMesh
from ..geodream_ops.uni3d.point_sampling import UNI3D_NUM_POINTS
from ..geodream_ops.uni3d.uni3d_score import RankingTable, load_scorer, similarity
from ..geodream_ops.uni3d.uni3d_text import CLIP_MODEL, TEMPLATE_SETS
from . import categories
from . import edge_types as T
from . import host

CLIP_FOLDERS = ("geodream", "clip")
PRECISIONS = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
UP_AXES = ("auto", "Z up (GeoDream frame)", "Y up (glTF)")


def _clip_files() -> list[str]:
    return host.model_choices("GeoDreamLoadUni3D", "clip_checkpoint",
                              sorted({name for folder in CLIP_FOLDERS for name in host.list_models(folder)}))


class GeoDreamLoadUni3D:
    DESCRIPTION = ("Loads the Uni3D point-cloud encoder (tiny to giant, recognised from the file) and the CLIP text "
                   "encoder it was aligned to (open_clip EVA02-E-14-plus), for GeoDream Uni3D Score.")
    CATEGORY = categories.LOADERS
    RETURN_TYPES = (T.UNI3D,)
    RETURN_NAMES = ("uni3d",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        uni3d_files = host.model_choices("GeoDreamLoadUni3D", "uni3d_checkpoint", host.list_models("geodream"))
        return {"required": {
            "uni3d_checkpoint": (uni3d_files, {"tooltip":
                "A Uni3D model.pt from huggingface.co/BAAI/Uni3D (modelzoo/uni3d-g, -l or -b; tiny and small "
                "files load too), renamed and put in models/geodream/ (`python -m headless.models download "
                "uni3d-g` does both). uni3d-g (giant, 1B parameters, ~4 GB in fp32) is the one GeoDream reports."}),
            "clip_checkpoint": (_clip_files(), {"tooltip":
                "EVA02-E-14-plus-text.safetensors (the text tower that `python -m headless.models download "
                "eva02-e-14-plus-text` keeps), or the full open_clip_pytorch_model.bin of "
                "timm/eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k, in models/geodream/ or models/clip/. "
                "Only the text tower is read (~1.4 GB in fp16)."}),
            "clip_model": ("STRING", {"default": CLIP_MODEL, "tooltip":
                "The open_clip architecture of that file. Uni3D was trained against EVA02-E-14-plus; keep it."}),
            "precision": (list(PRECISIONS), {"default": "auto", "tooltip":
                "auto: fp16 on a GPU, fp32 on the CPU. fp16 halves memory; compare scores made at one precision."}),
        }}

    @classmethod
    def IS_CHANGED(cls, uni3d_checkpoint, clip_checkpoint, **_):
        return host.model_fingerprint("geodream", uni3d_checkpoint) + host.model_fingerprint(CLIP_FOLDERS,
                                                                                              clip_checkpoint)

    def load(self, uni3d_checkpoint, clip_checkpoint, clip_model, precision):
        device = host.device()
        dtype = PRECISIONS[precision] or (torch.float16 if device.type == "cuda" else torch.float32)
        return (load_scorer(host.find_model("geodream", uni3d_checkpoint, "GeoDreamLoadUni3D", "uni3d_checkpoint"),
                            host.find_model(CLIP_FOLDERS, clip_checkpoint, "GeoDreamLoadUni3D", "clip_checkpoint"),
                            clip_model.strip(), device, dtype),)


def as_textured_mesh(mesh) -> tuple[TexturedMesh, bool]:
    """Our mesh, or the first mesh of a core MESH batch (geometry only, so scored grey), and whether it is Z up."""
    if isinstance(mesh, TexturedMesh):
        return mesh, True
    if hasattr(mesh, "vertices") and hasattr(mesh, "faces"):
        return TexturedMesh(mesh.vertices[0].float().cpu(), mesh.faces[0].long().cpu()), False
    raise ValueError(f"GeoDream: 'mesh' must be a GEODREAM_MESH or a core MESH, got {type(mesh).__name__}")


class GeoDreamUni3DScore:
    DESCRIPTION = ("Uni3D score: how well a mesh matches its prompt in 3D (GeoDream's semantic-coherence metric). "
                   "Samples a coloured point cloud from the surface, embeds it with Uni3D and the prompt with "
                   "CLIP, and reports their cosine similarity x100 (higher is better; compare scores only between "
                   "meshes scored with the same Uni3D model). With distractor prompts, also reports the rank of "
                   "the prompt among them.")
    CATEGORY = categories.SCORE
    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("score", "report")
    OUTPUT_TOOLTIPS = ("Cosine similarity x100 of the mesh and the prompt.", "The score, and the ranking.")
    FUNCTION = "score"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "uni3d": (T.UNI3D, {"tooltip": "From GeoDream Load Uni3D."}),
                "mesh": (f"{T.MESH},MESH", {"tooltip":
                    "The mesh to score: a GEODREAM_MESH (colours from its texture) or a core MESH (geometry "
                    "only, scored in Uni3D's no-colour grey; the first of a batch)."}),
                "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                    "The prompt the mesh was made from."}),
            },
            "optional": {
                "distractor_prompts": ("STRING", {"multiline": True, "default": "", "tooltip":
                    "Other prompts, one per line; the report ranks the prompt among them (rank 1: the mesh "
                    "matches its own prompt best)."}),
                "templates": (list(TEMPLATE_SETS), {"default": "prompt as written", "tooltip":
                    "'uni3d 64 templates' averages the text embedding over Uni3D's 64 zero-shot templates "
                    "('a point cloud model of {}.', ...), made for short class names; 64x the text time."}),
                "num_points": ("INT", {"default": UNI3D_NUM_POINTS, "min": 1024, "max": 100_000, "step": 1000,
                                       "tooltip": "Surface points fed to Uni3D; it was trained on 10,000."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "tooltip":
                    "Seed of the point sampling; the same seed gives the same score."}),
                "up_axis": (list(UP_AXES), {"default": "auto", "tooltip":
                    "Which axis is up in the mesh; Uni3D expects Y up. auto: Z for a GEODREAM_MESH (the pack's "
                    "frame), Y for a core MESH (glTF, as SaveGLB writes it)."}),
            },
        }

    def score(self, uni3d, mesh, prompt, distractor_prompts="", templates="prompt as written",
              num_points=UNI3D_NUM_POINTS, seed=0, up_axis="auto"):
        prompt = prompt.strip()
        if not prompt:
            raise ValueError("GeoDream: the prompt is empty; give the prompt the mesh was made from.")
        mesh, z_up = as_textured_mesh(mesh)
        if up_axis != "auto":
            z_up = up_axis == UP_AXES[1]
        distractors = [line.strip() for line in distractor_prompts.splitlines()]
        prompts = [prompt] + [p for p in dict.fromkeys(distractors) if p and p != prompt]
        progress = host.Progress(2, "Uni3D score")
        shape = uni3d.embed_mesh(mesh, num_points, seed, z_up)
        progress.update()
        host.check_interrupt()
        text = uni3d.embed_prompts(prompts, TEMPLATE_SETS[templates])
        progress.update()
        progress.close()
        table = RankingTable(["mesh"], prompts, similarity(shape, text), torch.zeros(1, dtype=torch.long))
        score = table.own_scores.item()
        lines = [f"Uni3D score {score:.2f} (cosine similarity x100) for {prompt!r}; {num_points} points, seed {seed}."]
        if len(prompts) > 1:
            lines.append(f"Rank {table.ranks.item()} of {len(prompts)} prompts:")
            order = table.scores[0].argsort(descending=True).tolist()
            lines += [f"  {table.scores[0, i].item():6.2f}  {prompts[i]}" for i in order]
        report = "\n".join(lines)
        # web/score.js shows the score on the node from "geodream_score"; "text" is the report as core nodes give it.
        shown = {"score": score, "rank": int(table.ranks.item()), "prompts": len(prompts)}
        return {"ui": {"text": [report], "geodream_score": [shown]}, "result": (score, report)}


NODES = {
    "GeoDreamLoadUni3D": (GeoDreamLoadUni3D, "GeoDream Load Uni3D"),
    "GeoDreamUni3DScore": (GeoDreamUni3DScore, "GeoDream Uni3D Score"),
}
