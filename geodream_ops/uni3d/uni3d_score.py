"""Uni3D score (GeoDream, sec. 4): the cosine similarity x100 between a mesh's Uni3D embedding and its prompt's
CLIP text embedding, and over a set of meshes and prompts the R-precision-style ranking: where each mesh's own
prompt ranks among all prompts."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..mesh.textured_mesh import TexturedMesh
from .point_sampling import UNI3D_NUM_POINTS, mesh_point_cloud
from .encoder import Uni3D, load_uni3d
from .uni3d_text import CLIP_MODEL, TextEncoder, load_text_encoder


@dataclass
class Uni3DScorer:
    """What travels on the GEODREAM_UNI3D edge: the point encoder and its paired text encoder."""
    point_model: Uni3D
    text: TextEncoder

    @torch.no_grad()
    def embed_mesh(self, mesh: TexturedMesh, num_points: int = UNI3D_NUM_POINTS, seed: int = 0,
                   z_up: bool = True) -> torch.Tensor:
        points = mesh_point_cloud(mesh, num_points, seed, z_up)
        device = next(self.point_model.parameters()).device
        return self.point_model.encode(points[None].to(device)).cpu()

    def embed_prompts(self, prompts: list[str], templates) -> torch.Tensor:
        return self.text.encode(prompts, templates).cpu()


def load_scorer(uni3d_path, clip_path, clip_model: str = CLIP_MODEL, device="cpu",
                dtype=torch.float32) -> Uni3DScorer:
    return Uni3DScorer(load_uni3d(uni3d_path, device, dtype), load_text_encoder(clip_path, clip_model, device, dtype))


def similarity(shape_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """[M, P] cosine similarities x100 (the scale GeoDream reports) of unit-length embeddings."""
    return 100.0 * shape_embeddings.float() @ text_embeddings.float().T


def ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[M] rank (1 = best) of each row's target column; a tie counts against the target."""
    own = scores.gather(1, targets[:, None])
    return (scores >= own).sum(dim=1)


@dataclass
class RankingTable:
    """One row per mesh: its prompt, its score with that prompt, and that prompt's rank among all prompts."""
    names: list[str]
    prompts: list[str]
    scores: torch.Tensor  # [M, P]
    targets: torch.Tensor  # [M], index of each mesh's own prompt

    @property
    def own_scores(self) -> torch.Tensor:
        return self.scores.gather(1, self.targets[:, None])[:, 0]

    @property
    def ranks(self) -> torch.Tensor:
        return ranks(self.scores, self.targets)

    def recall_at(self, k: int) -> float:
        return (self.ranks <= k).float().mean().item()

    def rows(self) -> list[dict]:
        best = self.scores.argmax(dim=1)
        return [{"mesh": name, "prompt": self.prompts[t], "uni3d_score": round(s, 2), "rank": r,
                 "of": len(self.prompts), "best_prompt": self.prompts[b]}
                for name, t, s, r, b in zip(self.names, self.targets.tolist(), self.own_scores.tolist(),
                                            self.ranks.tolist(), best.tolist())]

    def summary(self) -> dict:
        return {"meshes": len(self.names), "prompts": len(self.prompts),
                "mean_uni3d_score": round(self.own_scores.mean().item(), 2),
                "r_precision_at_1": round(self.recall_at(1), 4), "r_precision_at_5": round(self.recall_at(5), 4),
                "mean_rank": round(self.ranks.float().mean().item(), 2)}

    def markdown(self) -> str:
        header = "| mesh | prompt | Uni3D score | rank | best prompt |\n|---|---|---:|---:|---|\n"
        body = "".join(f"| {_md(r['mesh'])} | {_md(r['prompt'])} | {r['uni3d_score']:.2f} | {r['rank']}/{r['of']} "
                       f"| {_md(r['best_prompt'])} |\n" for r in self.rows())
        s = self.summary()
        return (f"{header}{body}\nMean Uni3D score {s['mean_uni3d_score']:.2f}; R-precision@1 "
                f"{s['r_precision_at_1']:.2%}, @5 {s['r_precision_at_5']:.2%}; mean rank {s['mean_rank']:.2f} "
                f"of {s['prompts']} prompts over {s['meshes']} meshes.\n")


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
