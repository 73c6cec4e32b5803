"""`python -m headless.models` against a hub-shaped server on 127.0.0.1 (tests/hub_server.py) serving tiny twins in
the published file layouts: downloads land where the loaders look and workflows run on them, cut transfers resume,
a checksum mismatch installs nothing, `list`/`check` name incomplete and corrupt files, and `--for` lists exactly
the models each example workflow needs."""
import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from safetensors import safe_open

from geodream_pack.geodream_ops import model_manifest as mm
from geodream_pack.geodream_ops import model_paths
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.geodream_ops.uni3d.uni3d_text import load_text_encoder
from headless import models as command
from headless.pack import PACK_ROOT
from headless.run import run_workflow
from tests import twins_multiview, twins_prior, twins_uni3d
from tests.hub_server import COMMIT, HubTwin
from tests.test_example_workflows import WORKFLOWS, tiny_for

PRIOR_FILE = "SparseNeuS_demo_v1/exp/lod0/checkpoints/ckpt_215000.pth"
PRIOR_URL = f"/One-2-3-45/code/resolve/{COMMIT}/{PRIOR_FILE}"  # pinned to the commit model_info named


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The hub twin serving tiny twins under the manifest's repositories, and the manifest pointed at them (the
    checksums the manifest publishes replaced by the twins', the U²-Net URL by the server's)."""
    src = tmp_path / "published"
    prior, _ = twins_prior.write_prior_checkpoint(src / "prior", sphere_radius=0.5)
    twins_multiview.write_zero123plus(src / "zero123plus")
    twins_uni3d.register_twin_size(monkeypatch)
    twins_uni3d.register_twin_clip(tmp_path / "clip_configs")
    uni3d = twins_uni3d.save_uni3d_twin(src / "uni3d.pt")
    clip = twins_uni3d.save_clip_twin(src / "clip.bin")
    # The published EVA02 file is bf16: so is its twin, and the text tower keeps it.
    torch.save({k: v.to(torch.bfloat16) for k, v in torch.load(clip, weights_only=True).items()}, clip)
    u2net = np.random.default_rng(0).bytes(3000)
    zero123plus = _tree(src / "zero123plus")
    zero123plus["unet/diffusion_pytorch_model.bin"] = b"a second copy in the older format"
    zero123plus["README.md"] = b"# not a model file"
    repos = {"sudo-ai/zero123plus-v1.2": zero123plus,
             "One-2-3-45/code": {PRIOR_FILE: prior.read_bytes(), "zero123-xl.ckpt": b"another model"},
             "BAAI/Uni3D": {"modelzoo/uni3d-g/model.pt": uni3d.read_bytes()},
             "timm/eva02_enormous_patch14_plus_clip_224.laion2b_s9b_b144k": {
                 "open_clip_pytorch_model.bin": clip.read_bytes()}}
    with HubTwin(repos, {"/rembg/u2net.onnx": u2net}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        manifest = dict(mm.load_manifest())
        manifest["uni3d-g"] = dataclasses.replace(manifest["uni3d-g"], bytes=uni3d.stat().st_size,
                                                  sha256=hashlib.sha256(uni3d.read_bytes()).hexdigest())
        manifest["u2net"] = dataclasses.replace(manifest["u2net"], md5=hashlib.md5(u2net).hexdigest(), bytes=len(u2net),
                                                source={"url": server.endpoint + "/rembg/u2net.onnx"})
        server.manifest, server.clip = manifest, clip
        yield server


def _run(hub, *argv):
    return command.main([*argv], manifest=hub.manifest)


def test_download_for_a_workflow_places_the_files_where_the_loaders_find_them(hub, pack_dirs, capsys):
    models = pack_dirs["models"]
    assert _run(hub, "download", "--for", str(WORKFLOWS / "prior_only.json")) == 0
    assert "needs: zero123plus-v1.2, sparseneus-lod0" in capsys.readouterr().out
    folder = models / "diffusers" / "zero123plus-v1.2"
    served = hub.repos["sudo-ai/zero123plus-v1.2"]
    skipped = ("README.md", "unet/diffusion_pytorch_model.bin")  # not a pattern; the .bin copy of safetensors weights
    assert _tree(folder) == {k: v for k, v in served.items() if k not in skipped}
    assert (models / "geodream" / "ckpt_215000.pth").read_bytes() == hub.repos["One-2-3-45/code"][PRIOR_FILE]
    assert not (models / mm.STAGING_NAME / "zero123plus-v1.2").exists()  # the staging folder is gone
    # Listed and verified as present; a second run fetches nothing.
    before = len(hub.requests)
    assert _run(hub, "download", "zero123plus-v1.2", "sparseneus-lod0") == 0
    assert len(hub.requests) == before
    assert _run(hub, "check", "zero123plus-v1.2", "sparseneus-lod0") == 0
    # The workflow runs on them, under the names it uses.
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(pack_dirs["input"] / "example.png")
    written = run_workflow(WORKFLOWS / "prior_only.json", tiny_for(WORKFLOWS / "prior_only.json"), log=lambda *_: None)
    assert any(p.endswith(".glb") for p in written)


def test_clip_is_kept_as_its_text_tower_and_scores_as_the_full_file(hub, pack_dirs, tmp_path):
    assert _run(hub, "download", "--for", str(WORKFLOWS / "mesh_to_uni3d_score.json")) == 0
    tower = pack_dirs["models"] / "geodream" / "EVA02-E-14-plus-text.safetensors"
    with safe_open(str(tower), "pt") as f:
        keys, note = list(f.keys()), f.metadata()
        assert f.get_tensor(keys[0]).dtype == torch.bfloat16
    full = torch.load(hub.clip, weights_only=True)
    assert set(keys) == {k for k in full if not k.startswith("visual.")} and any(k.startswith("visual.") for k in full)
    assert note["geodream_source_sha256"] == hashlib.sha256(hub.clip.read_bytes()).hexdigest()
    assert "image tower" in note["geodream_dropped"]
    prompts = ["a ceramic owl", "a chair"]
    from_tower = load_text_encoder(tower, twins_uni3d.TWIN_CLIP).encode(prompts)
    assert torch.equal(from_tower, load_text_encoder(hub.clip, twins_uni3d.TWIN_CLIP).encode(prompts))
    assert (pack_dirs["models"] / "geodream" / "uni3d-g.pt").stat().st_size == hub.manifest["uni3d-g"].bytes
    ball = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
    ball.export(pack_dirs["input"] / "owl.glb")
    log = []
    run_workflow(WORKFLOWS / "mesh_to_uni3d_score.json", tiny_for(WORKFLOWS / "mesh_to_uni3d_score.json"), log=log.append)
    assert any("GeoDreamUni3DScore done" in line for line in log)


def test_a_full_clip_file_already_here_is_cut_down_without_a_download(hub, pack_dirs):
    full = pack_dirs["models"] / "geodream" / "open_clip_pytorch_model.bin"
    full.parent.mkdir(parents=True)
    full.write_bytes(hub.clip.read_bytes())
    assert _run(hub, "download", "eva02-e-14-plus-text") == 0
    assert not [r for r in hub.requests if r[0] == "GET" and r[1].endswith("open_clip_pytorch_model.bin")]
    assert full.read_bytes() == hub.clip.read_bytes()  # the user's file stays
    with safe_open(str(full.with_name("EVA02-E-14-plus-text.safetensors")), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("visual.")]


def test_a_cut_transfer_resumes_where_it_stopped(hub, pack_dirs, monkeypatch, capsys):
    import huggingface_hub.constants

    # huggingface_hub writes in chunks of this size (10 MB), so a resume restarts at the last whole chunk; the
    # twin is 1.7 MB, so chunks of 64 KB show the resume inside it.
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)
    data = hub.repos["One-2-3-45/code"][PRIOR_FILE]
    hub.cut.add(PRIOR_URL)
    assert _run(hub, "download", "sparseneus-lod0") == 0
    gets = [r for r in hub.requests if r[:2] == ("GET", PRIOR_URL)]
    assert [r[2] for r in gets] == [None, f"bytes={len(data) // 2 // (1 << 16) * (1 << 16)}-"]
    assert (pack_dirs["models"] / "geodream" / "ckpt_215000.pth").read_bytes() == data
    # A transfer cut in an earlier run (its partial file left in the staging folder) continues from its end.
    (pack_dirs["models"] / "geodream" / "ckpt_215000.pth").unlink()
    part = pack_dirs["models"] / mm.STAGING_NAME / "sparseneus-lod0" / "ckpt_215000.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(data[:1000])
    assert _run(hub, "list") == 0
    assert "a download was cut at 1.0 KB; `python -m headless.models download sparseneus-lod0` resumes it" in \
        capsys.readouterr().out
    hub.requests.clear()
    assert _run(hub, "download", "sparseneus-lod0") == 0
    assert [r[2] for r in hub.requests if r[:2] == ("GET", PRIOR_URL)] == ["bytes=1000-"]
    assert (pack_dirs["models"] / "geodream" / "ckpt_215000.pth").read_bytes() == data


def test_a_checksum_mismatch_installs_nothing(hub, pack_dirs, capsys):
    hub.corrupt.add(PRIOR_URL)
    assert _run(hub, "download", "sparseneus-lod0") == 1
    assert "sha256 that differs from the published" in capsys.readouterr().err
    assert not (pack_dirs["models"] / "geodream" / "ckpt_215000.pth").exists()
    assert not list((pack_dirs["models"] / mm.STAGING_NAME).rglob("*.pth*"))
    # A manifest checksum the hub's file does not match: refused before anything is fetched.
    hub.manifest["uni3d-g"] = dataclasses.replace(hub.manifest["uni3d-g"], sha256="0" * 64)
    assert _run(hub, "download", "uni3d-g") == 1
    assert "differs from the manifest's" in capsys.readouterr().err
    assert not [r for r in hub.requests if r[1].endswith("uni3d-g/model.pt")]
    # Files outside the hub are checked against the publisher's md5.
    hub.corrupt.add("/rembg/u2net.onnx")
    assert _run(hub, "download", "u2net") == 1
    assert "md5" in capsys.readouterr().err and not (pack_dirs["models"] / "rembg" / "u2net.onnx").exists()


def test_list_and_check_name_incomplete_truncated_and_corrupt_files(hub, pack_dirs, capsys):
    assert _run(hub, "download", "sparseneus-lod0", "u2net") == 0
    capsys.readouterr()
    path = pack_dirs["models"] / "geodream" / "ckpt_215000.pth"
    data = path.read_bytes()
    path.write_bytes(data[:100])
    assert _run(hub, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("incomplete") and "sparseneus-lod0" in line for line in lines)
    assert any(f"{path} is truncated: 100 of {len(data):,} bytes" in line for line in lines)
    assert any(line.startswith("present") and "u2net" in line for line in lines)
    assert any(line.startswith("missing") and "zero123plus-v1.1" in line for line in lines)
    assert _run(hub, "check") == 1
    assert f"{path} is truncated" in capsys.readouterr().out
    path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    assert _run(hub, "check", "sparseneus-lod0") == 1
    assert f"{path} is corrupt" in capsys.readouterr().out
    assert _run(hub, "download", "sparseneus-lod0") == 0  # fetched again, verified
    assert path.read_bytes() == data and _run(hub, "check", "sparseneus-lod0", "u2net") == 0


def test_list_lines_up_its_columns_whatever_the_size_texts(hub, pack_dirs):
    """Every cell of a column starts where the column does, in every row, however long a manifest's size text
    (zero123-xl's runs to 70 characters); the notes below a model start under its name."""
    assert _run(hub, "download", "sparseneus-lod0", "u2net") == 0
    path = pack_dirs["models"] / "geodream" / "ckpt_215000.pth"
    path.write_bytes(path.read_bytes()[:100])  # incomplete: a note below its row
    lines = []
    assert command.list_models(hub.manifest, out=lines.append) == 0
    rows = [line for line in lines if not line.startswith(" ")]
    assert len(rows) == len(hub.manifest) and len(lines) > len(rows)
    # Cells are parted by two spaces or more; inside one (a size text, a path here) there is at most one.
    starts = [[0] + [m.end() for m in re.finditer(r" {2,}", row)] for row in rows]
    assert {len(s) for s in starts} == {4}
    assert all(len({s[column] for s in starts}) == 1 for column in range(4)), "\n".join(rows)
    key_column = starts[0][1]
    assert all(len(line) - len(line.lstrip(" ")) == key_column for line in lines if line.startswith(" "))
    longest = max((e.size for e in hub.manifest.values()), key=len)
    assert len(longest) > 40 and any(longest in row for row in rows)
    assert all(row[starts[0][3]:] == str(pack_dirs["models"] / e.folder / e.name)
               for row, e in zip(rows, hub.manifest.values()))


@pytest.mark.parametrize("name, expected", [
    ("text_to_3d_mvdream", ["zero123plus-v1.1", "mvdream-sd21-4view", "sparseneus-lod0", "sd21-base", "sd21"]),
    ("image_to_3d_zero123plus", ["zero123plus-v1.2", "sparseneus-lod0", "sd21-base", "sd21"]),
    ("image_to_3d_zero123", ["zero123-xl", "sparseneus-lod0", "sd21-base", "sd21"]),
    ("prior_only", ["zero123plus-v1.2", "sparseneus-lod0"]),
    ("mesh_to_uni3d_score", ["uni3d-g", "eva02-e-14-plus-text"]),
    ("camera_rig", []),
])
def test_for_lists_exactly_what_each_example_workflow_needs(name, expected):
    entries, own = command.workflow_models(WORKFLOWS / f"{name}.json", mm.load_manifest())
    assert [e.key for e in entries] == expected and own == []


def test_readme_table_is_generated_from_the_manifest():
    assert mm.readme_table() in (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    for entry in mm.load_manifest().values():  # every entry says where it comes from and what checks it
        assert entry.size and entry.checked and entry.published_checksum() != "none published"


def test_missing_models_name_the_folder_and_the_command(pack_dirs):
    from geodream_pack.nodes.multiview import GeoDreamLoadZero123Plus
    from geodream_pack.nodes.prior import GeoDreamLoadPrior
    from geodream_pack.nodes.uni3d import GeoDreamLoadUni3D
    from headless import executor, validation
    from headless.installed import node_classes

    with pytest.raises(GeoDreamError, match=r"ckpt_215000.pth' is missing; looked in .*geodream.*"
                                            r"python -m headless.models download sparseneus-lod0"):
        GeoDreamLoadPrior().load("ckpt_215000.pth")
    with pytest.raises(GeoDreamError, match=r"stored as 'EVA02-E-14-plus-text.safetensors'.*"
                                            r"download eva02-e-14-plus-text"):
        twins_uni3d.save_uni3d_twin(pack_dirs["models"] / "geodream" / "uni3d-g.pt")
        GeoDreamLoadUni3D().load("uni3d-g.pt", "open_clip_pytorch_model.bin", "EVA02-E-14-plus", "fp32")
    # The lists: what can be the model first, then the rest, then the published names not downloaded yet.
    diffusers = pack_dirs["models"] / "diffusers"
    (diffusers / "my-sd").mkdir(parents=True)
    (diffusers / "my-sd" / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (diffusers / "zero123plus-v1.1-fp16").mkdir()  # by its name
    twins_multiview.write_zero123plus(diffusers / "renamed")  # by its signature: ramping_coefficients
    folders = GeoDreamLoadZero123Plus.INPUT_TYPES()["required"]["folder"][0]
    assert folders == ["renamed", "zero123plus-v1.1-fp16", "my-sd", "zero123plus-v1.2", "zero123plus-v1.1"]
    # The runner: a name that is no choice says where it looked and what fetches a published model ...
    graph = {"2": {"class_type": "GeoDreamLoadZero123Plus", "inputs": {"folder": "zero123plus", "version": "auto"}},
             "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}
    with pytest.raises(executor.WorkflowError, match=r"searched .*diffusers.*download zero123plus-v1.2"):
        validation.validate(graph, node_classes())
    # ... and before running anything, the missing models of a workflow are listed with one command for all.
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(pack_dirs["input"] / "example.png")
    with pytest.raises(GeoDreamError, match=r"(?s)Zero123\+\+ v1.2.*SparseNeuS.*download --for .*prior_only.json"):
        run_workflow(WORKFLOWS / "prior_only.json", tiny_for(WORKFLOWS / "prior_only.json"), log=lambda *_: None)


def test_bad_values_are_reported_before_missing_models_and_nothing_runs(pack_dirs, capsys):
    """A workflow with its models missing and a bad value on its last node: the value first (no download fixes
    it, and it costs a second to mend), then, with the value mended, the missing models; each one clear error
    before any node runs or any file is written."""
    from PIL import Image

    from headless.__main__ import main as run_command
    from headless.workflow import WorkflowError

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(pack_dirs["input"] / "example.png")
    path = WORKFLOWS / "prior_only.json"
    bad = {**tiny_for(path), "GeoDreamPriorToMesh": {"resolution": 4}, "GeoDreamSaveMesh": {"filename_prefix": "../x"}}
    log = []
    with pytest.raises(WorkflowError) as caught:
        run_workflow(path, bad, log=log.append)
    message = str(caught.value)
    assert "(GeoDreamPriorToMesh): resolution=4 is outside" in message and "points outside the output folder" in message
    assert "not downloaded" not in message and log == [] and list(pack_dirs["output"].rglob("*")) == []
    with pytest.raises(GeoDreamError, match="needs models that are not downloaded yet"):
        run_workflow(path, tiny_for(path), log=log.append)
    assert not any("..." in line for line in log) and list(pack_dirs["output"].rglob("*")) == []
    # The command line: the same order, each as its error message, no traceback.
    assert run_command([str(path), "--set", "GeoDreamPriorToMesh.resolution=4"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the workflow cannot run:") and "resolution=4" in err and "Traceback" not in err
    assert run_command([str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: GeoDream: this workflow needs models") and "Traceback" not in err


def test_models_folder_of_the_comfyui_install_with_extra_model_paths(tmp_path, monkeypatch):
    root = tmp_path / "ComfyUI"
    pack = root / "custom_nodes" / "comfyui-geodream"
    pack.mkdir(parents=True)
    (root / "folder_paths.py").write_text("")
    (root / "extra_model_paths.yaml").write_text(
        "mine:\n  base_path: ../shared\n  is_default: true\n  diffusers: |\n    diff\n    diff2\n"
        "other:\n  base_path: /abs/store\n  geodream: gd\n  clip: clip_models\n")
    monkeypatch.setattr(model_paths, "PACK_ROOT", pack)
    monkeypatch.delenv("GEODREAM_MODELS_DIR")
    shared = tmp_path / "shared"
    assert model_paths.search_folders("diffusers") == [shared / "diff2", shared / "diff", root / "models" / "diffusers"]
    assert model_paths.search_folders("geodream") == [root / "models" / "geodream", Path("/abs/store/gd")]
    assert model_paths.search_folders("text_encoders")[-1].name == "clip_models"  # clip is ComfyUI's old name
    assert model_paths.search_folders("rembg", tmp_path / "elsewhere") == [tmp_path / "elsewhere" / "rembg"]


def test_a_pack_linked_into_custom_nodes_uses_that_comfyuis_models_folder(tmp_path):
    """A clone elsewhere, symlinked into custom_nodes/: the command, run from the link as the README says, finds
    ComfyUI by the path it was reached by ($PWD keeps the link) and says which folder and why before fetching."""
    import os
    import subprocess
    import sys

    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "folder_paths.py").write_text("")
    link = root / "custom_nodes" / "comfyui-geodream"
    link.symlink_to(PACK_ROOT, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "GEODREAM_MODELS_DIR"}

    def dry_run(folder):
        # A dry run asks the hub for the file list (sizes), so the command gets a hub twin serving the model.
        with HubTwin({"One-2-3-45/code": {PRIOR_FILE: b"lod0"}}) as hub:
            run = subprocess.run([sys.executable, "-m", "headless.models", "download", "--dry-run", "sparseneus-lod0"],
                                 cwd=folder, env={**env, "PWD": str(folder), "HF_ENDPOINT": hub.endpoint},
                                 capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        return lines[0], next(line for line in lines if line.startswith("would fetch"))

    reason, fetch = dry_run(link)
    assert reason == (f"models folder {root / 'models'} (the ComfyUI install the pack is in, reached through the "
                      f"link {link} (the pack itself is {PACK_ROOT}); plus its extra_model_paths.yaml)")
    assert fetch.endswith(f"to {root / 'models' / 'geodream' / 'ckpt_215000.pth'}")
    reason, fetch = dry_run(PACK_ROOT)  # the clone itself: not in ComfyUI by any path, and the message says so
    assert "is not inside a ComfyUI install by any path it was reached by" in reason and "--models-dir" in reason
    assert model_paths.comfyui_root(link) == root and model_paths.comfyui_root(PACK_ROOT) is None


def test_a_gated_model_says_which_licence_to_accept_and_how_to_pass_a_token(hub, pack_dirs, capsys):
    hub.gated.add("stabilityai/stable-zero123")
    assert _run(hub, "download", "stable-zero123") == 1
    err = capsys.readouterr().err
    assert "huggingface.co/stabilityai/stable-zero123" in err and "accept" in err and "HF_TOKEN" in err
    assert "Check the connection" not in err  # the refusal is the licence's, not the network's
    assert not (pack_dirs["models"] / "checkpoints" / "stable_zero123.ckpt").exists()


def test_download_says_what_it_will_take_and_refuses_when_the_disk_cannot_hold_it(hub, pack_dirs, monkeypatch,
                                                                                  capsys):
    """Before the first byte: each model's size (what the hub serves, less a cut transfer's part), the total, the
    target disk's free space; a disk too small is refused with those figures and nothing is fetched."""
    import shutil as shell

    prior = len(hub.repos["One-2-3-45/code"][PRIOR_FILE])
    served = hub.repos["sudo-ai/zero123plus-v1.2"]
    zero123plus = sum(len(v) for k, v in served.items() if k not in ("README.md", "unet/diffusion_pytorch_model.bin"))
    part = pack_dirs["models"] / mm.STAGING_NAME / "sparseneus-lod0" / "ckpt_215000.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(hub.repos["One-2-3-45/code"][PRIOR_FILE][:1000])
    real = shell.disk_usage
    free = {"bytes": prior + zero123plus - 1000 - 1}  # one byte short
    monkeypatch.setattr(command.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=free["bytes"]))
    hub.requests.clear()
    assert _run(hub, "download", "zero123plus-v1.2", "sparseneus-lod0") == 1
    out, err = capsys.readouterr()
    assert f"zero123plus-v1.2       {command._human(zero123plus):>10} to fetch" in out
    assert f"sparseneus-lod0        {command._human(prior - 1000):>10} to fetch" in out
    assert f"total to fetch: {command._human(prior + zero123plus - 1000)}" in out
    assert f"free space at {pack_dirs['models'] / 'diffusers'}: {command._human(free['bytes'])}" in out
    assert "but its disk has" in err and "Nothing was downloaded" in err
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]  # not a byte
    # With room, the same command fetches them; run again, it says they are there and fetches nothing.
    free["bytes"] = 10 * (prior + zero123plus)
    assert _run(hub, "download", "zero123plus-v1.2", "sparseneus-lod0") == 0
    capsys.readouterr()
    hub.requests.clear()
    assert _run(hub, "download", "zero123plus-v1.2", "sparseneus-lod0") == 0
    out = capsys.readouterr().out
    assert "zero123plus-v1.2       already there" in out and "total to fetch: 0 B" in out
    assert not hub.requests


def test_a_dry_run_says_what_it_would_fetch_how_large_and_whether_it_fits(hub, pack_dirs, monkeypatch, capsys):
    """The summary a download prints before its first byte, from the hub's file list, and then nothing fetched:
    each model's size (a model already there is said to be), the total, the free space said to hold it; a disk too
    small is refused as a real download refuses it."""
    import shutil as shell

    models = pack_dirs["models"]
    prior = len(hub.repos["One-2-3-45/code"][PRIOR_FILE])
    u2net = len(hub.urls["/rembg/u2net.onnx"])
    assert _run(hub, "download", "u2net") == 0
    capsys.readouterr()
    real = shell.disk_usage
    free = {"bytes": 10 * prior}
    monkeypatch.setattr(command.shutil, "disk_usage", lambda path: real(path)._replace(free=free["bytes"]))
    before = sorted(models.rglob("*"))
    hub.requests.clear()
    assert _run(hub, "download", "--dry-run", "sparseneus-lod0", "u2net") == 0
    out = capsys.readouterr().out
    assert f"sparseneus-lod0        {command._human(prior):>10} to fetch into {models / 'geodream'}" in out
    assert f"u2net                  already there ({models / 'rembg' / 'u2net.onnx'})" in out
    assert f"total to fetch: {command._human(prior)}" in out
    assert f"free space at {models / 'geodream'}: {command._human(free['bytes'])}, enough for the " \
           f"{command._human(prior)} going there" in out
    fetch = [line for line in out.splitlines() if line.startswith("would fetch")]
    assert fetch == [f"would fetch sparseneus-lod0 from {hub.manifest['sparseneus-lod0'].origin} to "
                     f"{models / 'geodream' / 'ckpt_215000.pth'}"]
    assert "nothing was fetched" in out
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]  # the file list only
    assert sorted(models.rglob("*")) == before
    # One byte short: the dry run says so, as the download would, and fails.
    hub.manifest["u2net"] = dataclasses.replace(hub.manifest["u2net"], folder="geodream")  # both to one folder
    free["bytes"] = prior + u2net - 1
    assert _run(hub, "download", "--dry-run", "sparseneus-lod0", "u2net") == 1
    out, err = capsys.readouterr()
    assert f"total to fetch: {command._human(prior + u2net)}" in out and "would fetch" not in out
    assert f"need {command._human(prior + u2net)} at {models / 'geodream'} but its disk has" in err
    assert not [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    assert sorted(models.rglob("*")) == before
