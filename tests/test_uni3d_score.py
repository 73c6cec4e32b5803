"""Uni3D score: the ranking maths, the nodes on tiny twins, and the batch evaluation command."""
import csv
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
from geodream_pack.geodream_ops.mesh.mesh_import import load_mesh
from geodream_pack.geodream_ops.uni3d.point_sampling import mesh_point_cloud
from geodream_pack.geodream_ops.uni3d.uni3d_score import RankingTable, load_scorer, ranks, similarity
from geodream_pack.geodream_ops.uni3d.uni3d_text import TEMPLATE_SETS
from geodream_pack.nodes.uni3d import GeoDreamLoadUni3D, GeoDreamUni3DScore
from headless import evaluate_uni3d
from tests.twins_uni3d import TWIN_CLIP, register_twin_clip, register_twin_size, save_clip_twin, save_uni3d_twin

NUM_POINTS = 1024


@pytest.fixture
def twin_files(pack_dirs, tmp_path, monkeypatch):
    register_twin_size(monkeypatch)
    register_twin_clip(tmp_path / "configs")
    folder = pack_dirs["models"] / "geodream"
    return save_uni3d_twin(folder / "uni3d-twin.pt"), save_clip_twin(pack_dirs["models"] / "clip" / "twin_clip.bin")


def tetrahedron(scale=1.0) -> TexturedMesh:
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.5]]) * scale
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    return TexturedMesh(vertices, faces, vertex_colors=torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0.]]))


def test_similarity_is_cosine_times_100():
    shapes = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]]), dim=-1)
    texts = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    expected = torch.tensor([[100, 0, 0], [100 / 2 ** 0.5, 100 / 2 ** 0.5, 0]])
    assert torch.allclose(similarity(shapes, texts), expected)


def test_ranks_count_ties_against_the_target():
    scores = torch.tensor([[9.0, 5, 1], [9.0, 5, 1], [2.0, 2, 2]])
    assert ranks(scores, torch.tensor([0, 2, 1])).tolist() == [1, 3, 3]


def test_ranking_table_rows_and_summary():
    scores = torch.tensor([[30.0, 10, 5], [12.0, 20, 25]])
    table = RankingTable(["a.glb", "b.glb"], ["a cat", "a dog", "a cow"], scores, torch.tensor([0, 1]))
    assert table.rows() == [
        {"mesh": "a.glb", "prompt": "a cat", "uni3d_score": 30.0, "rank": 1, "of": 3, "best_prompt": "a cat"},
        {"mesh": "b.glb", "prompt": "a dog", "uni3d_score": 20.0, "rank": 2, "of": 3, "best_prompt": "a cow"}]
    assert table.summary() == {"meshes": 2, "prompts": 3, "mean_uni3d_score": 25.0, "r_precision_at_1": 0.5,
                               "r_precision_at_5": 1.0, "mean_rank": 1.5}
    assert "| b.glb | a dog | 20.00 | 2/3 | a cow |" in table.markdown()


def test_score_node_on_our_mesh_and_on_core_mesh(twin_files):
    uni3d_file, clip_file = twin_files
    (scorer,) = GeoDreamLoadUni3D().load(uni3d_file.name, clip_file.name, TWIN_CLIP, "auto")
    node = GeoDreamUni3DScore()
    mesh = tetrahedron()
    out = node.score(scorer, mesh, " a tetrahedron ", "a sphere\n\na cube\na tetrahedron", num_points=NUM_POINTS)
    score, report = out["result"]
    # the same number computed from the two encoders directly
    reference = scorer.point_model.encode(mesh_point_cloud(mesh, NUM_POINTS)[None])
    texts = scorer.text.encode(["a tetrahedron", "a sphere", "a cube"])
    expected = 100 * reference @ texts.T
    assert score == pytest.approx(expected[0, 0].item(), abs=1e-4)
    rank = int((expected[0] >= expected[0, 0]).sum())
    assert f"Rank {rank} of 3 prompts" in report and report.count("\n") == 4
    assert out["ui"]["text"] == [report]

    core = SimpleNamespace(vertices=mesh.vertices[None], faces=mesh.faces[None].int())
    core_auto = node.score(scorer, core, "a tetrahedron", num_points=NUM_POINTS)["result"][0]
    core_y = node.score(scorer, core, "a tetrahedron", num_points=NUM_POINTS, up_axis="Y up (glTF)")["result"][0]
    grey_z = node.score(scorer, TexturedMesh(mesh.vertices, mesh.faces), "a tetrahedron", num_points=NUM_POINTS,
                        up_axis="Z up (GeoDream frame)")["result"][0]
    assert core_auto == core_y != grey_z


def test_score_node_refuses_bad_input(twin_files):
    (scorer,) = GeoDreamLoadUni3D().load(twin_files[0].name, twin_files[1].name, TWIN_CLIP, "fp32")
    with pytest.raises(ValueError, match="prompt is empty"):
        GeoDreamUni3DScore().score(scorer, tetrahedron(), "  ")
    with pytest.raises(ValueError, match="GEODREAM_MESH or a core MESH"):
        GeoDreamUni3DScore().score(scorer, "mesh.glb", "a cube")
    with pytest.raises(FileNotFoundError, match="models/geodream/ or models/clip/"):
        GeoDreamLoadUni3D().load(twin_files[0].name, "missing.bin", TWIN_CLIP, "fp32")


def write_meshes(folder):
    """Three small coloured meshes in three file formats, named after their prompts (one paired explicitly)."""
    folder.mkdir()
    shapes = {"a_red_box_00001_.glb": trimesh.creation.box(), "a_blue_ball.ply": trimesh.creation.icosphere(1),
              "odd-name.obj": trimesh.creation.cone(0.5, 1.0, sections=8)}
    for index, (name, mesh) in enumerate(shapes.items()):
        colour = np.zeros((len(mesh.vertices), 4), dtype=np.uint8)
        colour[:, index], colour[:, 3] = 255, 255
        mesh.visual.vertex_colors = colour
        mesh.export(folder / name)
    return sorted(shapes)


def test_batch_evaluation_writes_a_well_formed_table(twin_files, tmp_path):
    uni3d_file, clip_file = twin_files
    meshes = write_meshes(tmp_path / "meshes")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red box\na blue ball\nodd-name.obj\ta green cone\na teapot\n", encoding="utf-8")
    out = tmp_path / "scores"
    code = evaluate_uni3d.main(["--meshes", str(tmp_path / "meshes"), "--prompts", str(prompts), "--out", str(out),
                                "--uni3d", str(uni3d_file), "--clip", str(clip_file), "--clip-model", TWIN_CLIP,
                                "--num-points", str(NUM_POINTS)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["uni3d_scores.csv", "uni3d_scores.md"]
    with open(out / "uni3d_scores.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["mesh"] for r in rows] == meshes
    assert [r["prompt"] for r in rows] == ["a blue ball", "a red box", "a green cone"]

    # every score and rank again, from the mesh files, through the scorer directly
    scorer = load_scorer(uni3d_file, clip_file, TWIN_CLIP)
    all_prompts = ["a red box", "a blue ball", "a green cone", "a teapot"]
    texts = scorer.embed_prompts(all_prompts, TEMPLATE_SETS["prompt as written"])
    for row in rows:
        shape = scorer.embed_mesh(load_mesh(tmp_path / "meshes" / row["mesh"]), NUM_POINTS, 0, True)
        scores = similarity(shape, texts)[0]
        own = scores[all_prompts.index(row["prompt"])]
        assert float(row["uni3d_score"]) == pytest.approx(own.item(), abs=0.006)
        assert int(row["rank"]) == int((scores >= own).sum()) and row["of"] == "4"
        assert row["best_prompt"] == all_prompts[int(scores.argmax())]
    markdown = (out / "uni3d_scores.md").read_text(encoding="utf-8")
    assert sum(line.startswith("| ") for line in markdown.splitlines()) == 1 + 3  # header and three meshes
    assert "R-precision@1" in markdown and "of 4 prompts over 3 meshes" in markdown


def test_batch_evaluation_names_meshes_without_prompt(twin_files, tmp_path, capsys):
    write_meshes(tmp_path / "meshes")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red box\n", encoding="utf-8")
    code = evaluate_uni3d.main(["--meshes", str(tmp_path / "meshes"), "--prompts", str(prompts),
                                "--out", str(tmp_path / "out"), "--uni3d", str(twin_files[0]),
                                "--clip", str(twin_files[1]), "--clip-model", TWIN_CLIP])
    assert code == 1
    assert "no prompt for a_blue_ball.ply, odd-name.obj" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
