"""Every file the pack reads fails with its name and the way out (model_files): truncated and corrupted files, the
wrong model in the right folder, suffixes in capitals, fp16 and wrapped state dicts, through the real loaders and
tiny twins in the published formats."""
import pytest
import torch
from safetensors.torch import save_file

from geodream_pack.geodream_ops import model_files
from geodream_pack.geodream_ops.multiview import mvdream_pipeline, zero123plus
from geodream_pack.geodream_ops.uni3d import encoder as uni3d
from geodream_pack.geodream_ops.prior.cost_volume import CostVolume
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.prior.geometry_decoder import GeometryDecoder
from geodream_pack.geodream_ops.prior.prior_checkpoint import load_prior
from geodream_pack.geodream_ops.guidance.sd_guidance import load_model
from tests import twins_multiview, twins_sd, twins_uni3d
from tests.twins_prior import write_prior_checkpoint


def cut(path, keep=0.5):
    """The first ``keep`` of the file, as a download that stopped early leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.fixture(scope="module")
def mvdream_state():
    return twins_multiview.mvdream_state_dict()


def test_truncated_mvdream_file_names_it_and_says_where_to_download(tmp_path, mvdream_state):
    """The issue's example: torch's "failed finding central directory" with no file name."""
    path = tmp_path / "sd-v2.1-base-4view.pt"
    torch.save(mvdream_state, path)
    with pytest.raises(GeoDreamError, match=r"sd-v2\.1-base-4view\.pt' is not MVDream's.*end is missing.*"
                                            r"stopped early.*MVDream/MVDream"):
        mvdream_pipeline.load_single_file(cut(path))


def test_truncated_uni3d_and_prior_files_name_themselves(tmp_path):
    uni3d_file = twins_uni3d.save_uni3d_twin(tmp_path / "uni3d-g.pt")
    with pytest.raises(GeoDreamError, match=r"uni3d-g\.pt' is not a Uni3D checkpoint.*stopped early.*BAAI/Uni3D"):
        uni3d.load_uni3d(cut(uni3d_file))
    prior_file, _ = write_prior_checkpoint(tmp_path)
    with pytest.raises(GeoDreamError, match=r"ckpt_215000\.pth' is not SparseNeuS's.*stopped early"):
        load_prior(cut(prior_file, 0.9))


def test_sd_folder_chosen_as_mvdream_says_what_it_holds(tmp_path):
    """The issue's example: today only `'input_blocks.0.0.weight'`."""
    folder = twins_sd.save_diffusers_folder(tmp_path / "sd21-base")
    with pytest.raises(GeoDreamError, match=r"is not MVDream's multi-view UNet.*holds a diffusers UNet "
                                            r"\(no camera_embed\.0\.weight\).*Pick an MVDream folder"):
        mvdream_pipeline.load_diffusers(folder)


def test_mvdream_file_chosen_as_guidance_is_named_not_a_size_mismatch_list(tmp_path, mvdream_state):
    """The issue's example: today a size-mismatch list."""
    path = tmp_path / "sd-v2.1-base-4view.pt"
    torch.save(mvdream_state, path)
    with pytest.raises(GeoDreamError, match=r"4view\.pt' is not a Stable Diffusion 2\.x single-file checkpoint: it is "
                                            r"MVDream's multi-view model.*stable-diffusion-2-1-base") as error:
        load_model(path)
    assert "\n" not in str(error.value)


def test_half_written_refinement_checkpoint_says_resume_off_or_delete(tmp_path):
    """The issue's example: today the raw zip error."""
    path = tmp_path / "refine-abc.pt"
    torch.save({"format": "geodream-refine/1", "field": {"volume": torch.zeros(64, 64)}}, path)
    with pytest.raises(GeoDreamError, match=r"refine-abc\.pt' is not a refinement checkpoint.*stopped early.*"
                                            r"resume off.*or delete '.*refine-abc\.pt'"):
        model_files.read_resume_checkpoint(cut(path), "a refinement checkpoint")
    path.write_bytes(b"")
    with pytest.raises(GeoDreamError, match=r"empty \(0 bytes\).*resume off"):
        model_files.read_resume_checkpoint(path, "a refinement checkpoint")


def test_capital_suffixes_fp16_and_wrapped_state_dicts_load_the_same_model(tmp_path, mvdream_state):
    reference = mvdream_pipeline.load_single_file(twins_multiview.write_mvdream_single_file(tmp_path / "a.pt"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in mvdream_state.items()}
    wrapped = {"state_dict": {"module." + k: v for k, v in half.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "wrapped.PT")
    save_file({k: v.contiguous() for k, v in half.items()}, str(tmp_path / "half.SafeTensors"))
    for name in ("wrapped.PT", "half.SafeTensors"):
        model = mvdream_pipeline.load_single_file(tmp_path / name)
        for key, value in reference.unet.state_dict().items():
            assert torch.equal(model.unet.state_dict()[key], value.half().float()), key


def test_unwrap_descends_every_wrapper_and_drops_non_tensors():
    weight = torch.ones(2)
    state = {"model": {"module": {"module.layer.weight": weight, "step": 5}}, "optimizer": {"lr": 1}}
    assert model_files.unwrap_state_dict(state) == {"layer.weight": weight}
    assert model_files.unwrap_state_dict([weight]) == {}


def test_corrupted_safetensors_and_other_files_are_refused_by_name(tmp_path):
    good = tmp_path / "volume.safetensors"
    save_file({"volume": torch.zeros(1, 2, 3, 3, 3), "bbox": torch.zeros(2, 3)}, str(good))
    data = bytearray(good.read_bytes())
    data[10:20] = b"\x00" * 10  # inside the JSON header
    (tmp_path / "corrupt.safetensors").write_bytes(bytes(data))
    with pytest.raises(GeoDreamError, match=r"corrupt\.safetensors' is not a cost volume.*not valid safetensors JSON"):
        CostVolume.load(tmp_path / "corrupt.safetensors")
    with pytest.raises(GeoDreamError, match=r"holds .* of its .* bytes: the download stopped early"):
        CostVolume.load(cut(tmp_path / "volume.safetensors", 0.8))
    save_file({"weight": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(GeoDreamError, match=r"other\.safetensors' is not a cost volume.*no 'geodream-cost-volume/1' "
                                            r"tag and looks like 1 entry \(weight\)"):
        CostVolume.load(tmp_path / "other.safetensors")
    with pytest.raises(GeoDreamError, match="it is a folder"):
        model_files.read_checkpoint(tmp_path, "a checkpoint", "Pick a file.")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(GeoDreamError, match=r"'\.txt' is not a weights file"):
        model_files.read_checkpoint(tmp_path / "notes.txt", "a checkpoint", "Pick a file.")


class Opaque:
    """Stands for the training objects some checkpoints pickle beside their tensors."""


def test_pickled_objects_are_refused_unless_the_release_is_trusted(tmp_path):
    path = tmp_path / "objects.pth"
    torch.save({"weight": torch.ones(2), "args": Opaque()}, path)
    with pytest.raises(GeoDreamError, match="Python objects besides tensors, which the pack does not run"):
        model_files.read_checkpoint(path, "a checkpoint", "Pick another file.")
    assert torch.equal(model_files.read_checkpoint(path, "x", "y", trusted_pickle=True)["weight"], torch.ones(2))


def test_shape_mismatches_are_one_line_with_counts_and_the_first_example(tmp_path):
    decoder = GeometryDecoder()
    state = {k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) if v.ndim else v for k, v in decoder.state_dict().items()}
    with pytest.raises(GeoDreamError, match=rf"{len(state)} tensors of another shape, e.g. \S+ \(\d+") as error:
        model_files.load_weights(decoder, state, tmp_path / "x.pt", "a decoder", "Pick another file.")
    assert "\n" not in str(error.value)
    del state[next(iter(state))]
    with pytest.raises(GeoDreamError, match=r"1 missing, e.g."):
        model_files.load_weights(decoder, {k: v for k, v in decoder.state_dict().items() if k in state},
                                 tmp_path / "x.pt", "a decoder", "Pick another file.")


def test_truncated_weights_inside_a_diffusers_folder_name_the_file(tmp_path):
    folder = twins_multiview.write_zero123plus(tmp_path / "zero123plus-v1.2")
    weights = next((folder / "vae").glob("diffusion_pytorch_model.*"))
    cut(weights)
    with pytest.raises(GeoDreamError, match=rf"{weights.name}' is not Zero123\+\+ v1.2's vae/.*"
                                            r"download stopped early.*sudo-ai/zero123plus-v1.2"):
        zero123plus.load_diffusers(folder, "v1.2")


def test_saved_field_of_another_decoder_or_damaged_names_the_file(tmp_path):
    """A field saved beside its .json: a decoder of other shapes, then a truncated tensor file."""
    from geodream_pack.geodream_ops.refine.neus_field import FieldSettings, NeuSField

    settings = FieldSettings()
    volume = CostVolume(torch.zeros(1, 16, 4, 4, 4), GeometryDecoder(), torch.tensor([[-1.0] * 3, [1.0] * 3]))
    NeuSField(volume, settings).save(tmp_path / "field")
    other = CostVolume(volume.volume, torch.nn.Linear(3, 3), volume.bbox)
    with pytest.raises(GeoDreamError, match=r"field\.safetensors' is not a field saved by GeoDream Save Field: its "
                                            r"weights do not fit.*connect the cost volume it was refined from"):
        NeuSField.load(tmp_path / "field", other)
    cut(tmp_path / "field.safetensors")
    with pytest.raises(GeoDreamError, match=r"field\.safetensors' is not a field.*stopped early"):
        NeuSField.load(tmp_path / "field", volume)
