"""The host module's fallbacks outside ComfyUI: folders, output naming, interrupt, atomic writes."""
import pytest

from geodream_pack.geodream_ops.atomic import atomic_write
from geodream_pack.nodes import host


def test_find_model_names_file_and_folder(pack_dirs):
    (pack_dirs["models"] / "geodream").mkdir()
    (pack_dirs["models"] / "geodream" / "prior.pth").write_bytes(b"x")
    assert host.find_model("geodream", "prior.pth") == pack_dirs["models"] / "geodream" / "prior.pth"
    assert host.list_models("geodream") == ["prior.pth"]
    with pytest.raises(FileNotFoundError, match=r"'missing.pth' was not found in .*geodream.*models/geodream/"):
        host.find_model("geodream", "missing.pth")


def _save(prefix, data=b"1", suffix=".glb"):
    return host.save_output(prefix, (suffix,), lambda finals, temps: temps[suffix].write_bytes(data))[suffix]


def test_output_counter_and_containment(pack_dirs):
    first = _save("GeoDream/mesh")
    assert first == pack_dirs["output"] / "GeoDream" / "mesh_00001_.glb" and first.read_bytes() == b"1"
    (first.parent / "mesh_00007_.obj").write_bytes(b"7")
    assert _save("GeoDream/mesh").name == "mesh_00008_.glb"
    with pytest.raises(ValueError, match="outside the output folder"):
        _save("../../etc/x")


def test_interrupt_is_raised_once():
    host.request_interrupt()
    with pytest.raises(host.Interrupted):
        host.check_interrupt()
    host.check_interrupt()  # the flag is consumed


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    tmp_path = tmp_path / "atomic"
    tmp_path.mkdir()
    target = tmp_path / "out.glb"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_write(target) as tmp:
        assert tmp.suffix == ".glb"
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


def test_progress_falls_back_to_tqdm():
    bar = host.Progress(3)
    for _ in range(3):
        bar.update()
    assert bar.value == 3
    bar.close()
    assert str(host.device()) == "cpu"  # GEODREAM_DEVICE is set by the fixture


def test_image_preview_reaches_the_running_node(monkeypatch):
    """Inside ComfyUI the preview is sent as the event web/preview.js handles, addressed to the running node."""
    import base64
    import io
    import sys
    import types

    from PIL import Image

    sent = []
    instance = types.SimpleNamespace(last_node_id="17", send_sync=lambda event, data: sent.append((event, data)))
    monkeypatch.setitem(sys.modules, "server", types.SimpleNamespace(PromptServer=types.SimpleNamespace(instance=instance)))
    image = Image.new("RGB", (4, 3), (10, 200, 30))
    host.send_image_preview(image, 300, 1000)
    (event, data), = sent
    assert event == host.PREVIEW_EVENT == "geodream.preview"
    assert (data["node"], data["step"], data["total"]) == ("17", 300, 1000)
    decoded = Image.open(io.BytesIO(base64.b64decode(data["image"])))
    assert decoded.size == (4, 3) and decoded.getpixel((2, 1)) == (10, 200, 30)


def test_needs_autograd_lifts_comfyui_inference_mode():
    """ComfyUI runs nodes under torch.inference_mode(); decorated functions get ordinary tensors and autograd."""
    import torch

    @host.needs_autograd
    def train():
        weight = torch.ones(3, requires_grad=True)
        (weight * 2).sum().backward()
        return weight.grad, weight.is_inference()

    with torch.inference_mode():
        grad, is_inference = train()
        assert torch.is_inference_mode_enabled()
    assert torch.equal(grad, torch.full((3,), 2.0)) and not is_inference


def test_output_entry_names_files_as_comfyui_does(pack_dirs):
    nested = _save("GeoDream/meshes/owl")
    top = _save("owl")
    assert host.output_entry(nested) == {"filename": "owl_00001_.glb", "subfolder": "GeoDream/meshes", "type": "output"}
    assert host.output_entry(top) == {"filename": "owl_00001_.glb", "subfolder": "", "type": "output"}
