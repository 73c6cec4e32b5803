"""Loading the released checkpoint layout: a tiny twin in torchsparse layout loads, converts, and bad files fail loudly."""
import pytest
import torch

from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.prior.prior_checkpoint import CheckpointError, load_prior

from tests.twins_prior import release_checkpoint, write_prior_checkpoint


def test_twin_checkpoint_loads_and_converts_every_tensor(tmp_path):
    path, model = write_prior_checkpoint(tmp_path)
    loaded = load_prior(path)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert not any(p.requires_grad for p in loaded.parameters())


def _broken(tmp_path, edit):
    _, model = write_prior_checkpoint(tmp_path / "src")
    checkpoint = release_checkpoint(model)
    edit(checkpoint)
    path = tmp_path / "broken.pth"
    torch.save(checkpoint, path)
    return path


def test_missing_key_is_named(tmp_path):
    path = _broken(tmp_path, lambda c: c["sdf_network_lod0"].pop("sparse_costreg_net.conv5.net.0.kernel"))
    with pytest.raises(CheckpointError, match=r"missing: sdf_network_lod0\.sparse_costreg_net\.conv5\.net\.0\.kernel"):
        load_prior(path)


def test_mismatched_shapes_are_named(tmp_path):
    def edit(c):
        c["sdf_network_lod0"]["sdf_layer.lin1.weight_v"] = torch.zeros(128, 140)
        c["sdf_network_lod0"]["sparse_costreg_net.conv0.net.0.kernel"] = torch.zeros(16, 32, 3, 3, 3)  # not torchsparse

    with pytest.raises(CheckpointError) as err:
        load_prior(_broken(tmp_path, edit))
    assert "sdf_layer.lin1.weight_v: shape (128, 140), expected (128, 144)" in str(err.value)
    assert "conv0.net.0.kernel" in str(err.value)


def test_missing_section_or_other_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="pyramid_feature_network"):
        load_prior(_broken(tmp_path, lambda c: c.pop("pyramid_feature_network")))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(GeoDreamError, match=r"junk\.pth.*not a PyTorch file at all.*download it again"):
        load_prior(junk)
