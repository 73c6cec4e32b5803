"""The Uni3D encoder and its text encoder, loaded from tiny twins saved in the published layouts."""
import pytest
import torch

from geodream_pack.geodream_ops.uni3d import encoder as uni3d
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.mesh.textured_mesh import TexturedMesh
from geodream_pack.geodream_ops.uni3d.point_sampling import mesh_point_cloud
from geodream_pack.geodream_ops.uni3d.uni3d_text import UNI3D_TEMPLATES, load_text_encoder
from tests.twins_uni3d import TWIN_CLIP, TWIN_CONFIG, register_twin_clip, register_twin_size, save_clip_twin, \
    save_uni3d_twin


@pytest.fixture
def twin(tmp_path, monkeypatch):
    register_twin_size(monkeypatch)
    return save_uni3d_twin(tmp_path / "model.pt")


def box() -> TexturedMesh:
    corners = torch.tensor([[x, y, z] for x in (0, 2) for y in (0, 1) for z in (0, 0.5)], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return TexturedMesh(corners, faces, vertex_colors=corners / 2)


def test_twin_loads_strictly_with_every_tensor(twin):
    model = uni3d.load_uni3d(twin)
    saved = torch.load(twin, weights_only=True)["module"]
    loaded = model.state_dict()
    assert set(loaded) == set(saved)
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not model.training


def test_distributed_prefix_is_removed(twin, tmp_path):
    saved = torch.load(twin, weights_only=True)["module"]
    torch.save({"module": {f"module.{k}": v for k, v in saved.items()}}, tmp_path / "ddp.pt")
    assert torch.equal(uni3d.load_uni3d(tmp_path / "ddp.pt").logit_scale, saved["logit_scale"])


def test_wrong_files_are_refused_with_a_reason(twin, tmp_path, monkeypatch):
    torch.save({"module": {"weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(GeoDreamError, match=r"other\.pt' is not a Uni3D checkpoint.*holds 1 entry \(weight\)"):
        uni3d.load_uni3d(tmp_path / "other.pt")
    monkeypatch.delitem(uni3d.SIZES, "twin")
    with pytest.raises(GeoDreamError, match="32 wide with 2 blocks is none of the released sizes"):
        uni3d.load_uni3d(twin)


@pytest.mark.parametrize("size,width,depth,qkv", [("tiny", 192, 12, "qkv"), ("small", 384, 12, "qkv"),
                                                  ("base", 768, 12, "q_proj"), ("large", 1024, 24, "q_proj"),
                                                  ("giant", 1408, 40, "qkv")])
def test_published_layout(size, width, depth, qkv):
    """Shapes of the released files, from the reference's scripts (pc-feat-dim, embed-dim 1024, pc-encoder-dim 512)
    and the EVA variants timm builds for them (fused qkv for tiny/small/giant, separate q/k/v for base/large)."""
    with torch.device("meta"):
        state = uni3d.Uni3D(uni3d.SIZES[size]).state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["logit_scale"] == ()
    assert shapes["point_encoder.cls_token"] == shapes["point_encoder.cls_pos"] == (1, 1, width)
    assert shapes["point_encoder.encoder.first_conv.0.weight"] == (128, 6, 1)
    assert shapes["point_encoder.encoder.first_conv.1.running_var"] == (128,)
    assert shapes["point_encoder.encoder.second_conv.0.weight"] == (512, 512, 1)
    assert shapes["point_encoder.encoder.second_conv.3.weight"] == (512, 512, 1)
    assert shapes["point_encoder.encoder2trans.weight"] == (width, 512)
    assert shapes["point_encoder.trans2embed.weight"] == (1024, width)
    assert shapes["point_encoder.pos_embed.0.weight"] == (128, 3)
    assert shapes["point_encoder.pos_embed.2.weight"] == (width, 128)
    assert shapes["point_encoder.visual.fc_norm.weight"] == (width,)
    assert f"point_encoder.visual.blocks.0.attn.{qkv}.weight" in shapes
    assert len({k.split(".")[3] for k in shapes if ".visual.blocks." in k}) == depth
    assert uni3d.detect_size(state) == size
    assert not any(".rope." in k for k in shapes)  # rotary tables are rebuilt, never stored


def test_embedding_ignores_point_order(twin):
    model = uni3d.load_uni3d(twin)
    points = mesh_point_cloud(box(), 1024, seed=0)
    order = torch.randperm(1024, generator=torch.Generator().manual_seed(1))
    direct, shuffled = model.encode(points[None]), model.encode(points[order][None])
    assert direct.shape == (1, TWIN_CONFIG.embed_dim)
    assert direct.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(direct, shuffled, atol=1e-5)


def test_embedding_ignores_mesh_scale_and_position(twin):
    model = uni3d.load_uni3d(twin)
    mesh = box()
    moved = TexturedMesh(mesh.vertices * 3.0 + torch.tensor([-1.0, 5.0, 2.0]), mesh.faces,
                         vertex_colors=mesh.vertex_colors)
    embed = lambda m: model.encode(mesh_point_cloud(m, 1024, seed=2)[None])  # noqa: E731
    assert torch.allclose(embed(mesh), embed(moved), atol=1e-5)
    # ... while colour and shape do change it
    grey = TexturedMesh(mesh.vertices, mesh.faces)
    assert (embed(mesh) - embed(grey)).abs().max() > 0.01


def test_too_few_points_is_a_clear_error(twin):
    with pytest.raises(ValueError, match="at least 16 points"):
        uni3d.load_uni3d(twin).encode(torch.rand(1, 10, 6))


@pytest.mark.parametrize("legacy_layout", [False, True])
def test_text_encoder_matches_open_clip(tmp_path, legacy_layout):
    """Our text-tower loader against open_clip's own full model loaded from the same file."""
    import open_clip

    register_twin_clip(tmp_path / "configs")
    path = save_clip_twin(tmp_path / "open_clip_pytorch_model.bin", legacy_layout=legacy_layout)
    encoder = load_text_encoder(path, TWIN_CLIP)
    reference = open_clip.create_model(TWIN_CLIP, pretrained=str(path)).eval()
    tokenizer = open_clip.get_tokenizer(TWIN_CLIP)
    prompts = ["a corgi", "a red car"]
    with torch.no_grad():
        expected = reference.encode_text(tokenizer(prompts), normalize=True)
        # Uni3D's template ensemble: normalise each, average, normalise the average
        per_template = reference.encode_text(tokenizer([t.format("a corgi") for t in UNI3D_TEMPLATES]),
                                             normalize=True)
    assert torch.allclose(encoder.encode(prompts), expected, atol=1e-5)
    ensemble = torch.nn.functional.normalize(per_template.mean(0), dim=0)
    assert torch.allclose(encoder.encode(["a corgi"], UNI3D_TEMPLATES)[0], ensemble, atol=1e-5)


def test_text_file_without_text_tower_is_refused(tmp_path):
    register_twin_clip(tmp_path / "configs")
    torch.save({"visual.proj": torch.zeros(2)}, tmp_path / "vision_only.bin")
    with pytest.raises(GeoDreamError, match=r"vision_only\.bin' is not the EVA02.*holds an open_clip CLIP image tower"):
        load_text_encoder(tmp_path / "vision_only.bin", TWIN_CLIP)


def test_deepspeed_file_with_python_objects_loads(twin, tmp_path, caplog):
    """DeepSpeed pickles its config beside the weights, which the safe unpickler refuses; the loader falls back."""
    import argparse

    saved = torch.load(twin, weights_only=True)["module"]
    torch.save({"module": saved, "args": argparse.Namespace(pc_model="eva02_tiny_patch14_224")}, tmp_path / "ds.pt")
    model = uni3d.load_uni3d(tmp_path / "ds.pt")
    assert torch.equal(model.point_encoder.cls_pos, saved["point_encoder.cls_pos"])
    assert "full unpickling" in caplog.text
