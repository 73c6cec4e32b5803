"""Every file the pack writes survives races, kills, odd names and a full disk: names are claimed, never shared
(two processes lined up by a barrier); prefixes stay inside the output folder or are refused with one GeoDream error
before anything is written; a killed writer leaves no file under a final name and its temporary is removed later; an
OBJ's files appear together and parse in two readers; a full disk is one error naming the file, the previous file
whole. Races and kills run in child processes (tests/file_writers.py), each bounded in time."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import trimesh

from geodream_pack.geodream_ops import atomic, output_names, run_store
from geodream_pack.geodream_ops.errors import GeoDreamError
from geodream_pack.nodes import host
from geodream_pack.nodes.mesh_io import GeoDreamSaveMesh
from geodream_pack.nodes.prior import GeoDreamSaveCostVolume
from geodream_pack.nodes.refine import GeoDreamSaveField
from geodream_pack.nodes.cameras import GeoDreamSaveCameras

WRITERS = Path(__file__).with_name("file_writers.py")
CHILD_TIMEOUT_S = 120


def _spawn(role, barrier_dir, *args):
    return subprocess.Popen([sys.executable, str(WRITERS), role, str(barrier_dir), *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())


def _race(role, barrier_dir, idents, *args):
    """Start one child per ident, release them together once all are ready, and return their printed results."""
    barrier_dir.mkdir(exist_ok=True)
    children = [_spawn(role, barrier_dir, ident, *args) for ident in idents]
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while not all((barrier_dir / f"ready-{i}").exists() for i in idents):
            assert time.monotonic() < deadline, "children never reached the barrier"
            assert all(c.poll() is None for c in children), [c.communicate() for c in children]
            time.sleep(0.01)
        (barrier_dir / "go").touch()
        results = []
        for child in children:
            out, err = child.communicate(timeout=max(1, deadline - time.monotonic()))
            assert child.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


def _kill_when_ready(role, barrier_dir, ident, *args):
    barrier_dir.mkdir(exist_ok=True)
    child = _spawn(role, barrier_dir, ident, *args)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while not (barrier_dir / f"ready-{ident}").exists():
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()


def _temporaries(folder):
    return [p for p in Path(folder).rglob("*") if p.name.startswith(atomic.TEMP_PREFIX)]


def test_two_processes_saving_one_prefix_each_get_their_own_mesh(pack_dirs, tmp_path):
    """Two Save Mesh calls released together: two distinct files, each holding its own writer's box."""
    idents = ["1", "2"]
    paths = _race("save_mesh", tmp_path / "barrier", idents, "GeoDream/m", "glb")
    assert len(set(paths)) == 2
    for ident, relative in zip(idents, paths):
        loaded = trimesh.load(pack_dirs["output"] / relative, force="mesh")
        assert loaded.extents == pytest.approx([2 * float(ident)] * 3, rel=1e-5)
    assert not _temporaries(pack_dirs["output"])


def test_two_processes_saving_obj_triples_never_mix_them(pack_dirs, tmp_path):
    paths = _race("save_mesh", tmp_path / "barrier", ["1", "2"], "GeoDream/o", "obj")
    folder = pack_dirs["output"] / "GeoDream"
    assert len(set(paths)) == 2 and len(list(folder.iterdir())) == 6
    for relative in paths:
        obj = pack_dirs["output"] / relative
        (mtllib,) = [line.split()[1] for line in obj.read_text().splitlines() if line.startswith("mtllib")]
        assert mtllib == obj.with_suffix(".mtl").name and obj.with_suffix(".png").is_file()


def test_two_processes_writing_one_checkpoint_leave_it_whole(tmp_path):
    target = tmp_path / "runs" / "fam-seed1.pt"
    assert _race("write_checkpoint", tmp_path / "barrier", ["1", "2"], target) == ["ok"] * 2
    state = torch.load(target, weights_only=True)
    value = float(state["value"][0, 0])
    assert value in (1.0, 2.0) and torch.equal(state["value"], torch.full((256, 1024), value))
    assert run_store.read_info(target) is not None and not _temporaries(target.parent)


def test_a_killed_checkpoint_write_keeps_the_previous_one_and_its_temporary_is_removed(tmp_path):
    folder = tmp_path / "runs"
    target = folder / "fam-seed9.pt"
    run_store.write(target, {"format": 1, "value": torch.arange(5.0)}, run_store.RunInfo("fam", 9, 1, 2, 2))
    _kill_when_ready("hang_in_checkpoint", tmp_path / "barrier", "k", target)
    (left,) = _temporaries(folder)
    assert left.stat().st_size > 100_000 and atomic.is_stale(left)
    assert torch.equal(torch.load(target, weights_only=True)["value"], torch.arange(5.0))
    run_store.prune(folder, keep_unfinished=2)  # as a stage does when its run starts
    assert not _temporaries(folder) and target.is_file()


def test_a_killed_obj_save_leaves_no_companion_files(pack_dirs, tmp_path):
    _kill_when_ready("hang_in_obj_save", tmp_path / "barrier", "k", "GeoDream/killed")
    folder = pack_dirs["output"] / "GeoDream"
    assert [p.suffix for p in folder.iterdir() if not p.name.startswith(".")] == []
    assert _temporaries(folder)
    GeoDreamSaveMesh().save(_box(), "obj", "GeoDream/next")  # the next save into the folder tidies it
    assert not _temporaries(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["next_00001_.mtl", "next_00001_.obj", "next_00001_.png"]


def test_a_live_writers_temporary_is_not_stale(tmp_path):
    mine = atomic.temporary_name(tmp_path / "x.pt")
    mine.write_bytes(b"1")
    other_host = tmp_path / f"{atomic.TEMP_PREFIX}abcdef-1-00000000-x.pt"
    other_host.write_bytes(b"1")
    legacy = tmp_path / f"{atomic.TEMP_PREFIX}x.pt"  # an older version's fixed name
    legacy.write_bytes(b"1")
    old = time.time() - atomic.STALE_AFTER_S - 10
    os.utime(legacy, (old, old))
    assert not atomic.is_stale(mine) and not atomic.is_stale(other_host) and atomic.is_stale(legacy)
    assert atomic.remove_stale(tmp_path) == [legacy]


def _box():
    sys.path.insert(0, str(WRITERS.parent))
    import file_writers

    return file_writers.box(1.0)


# --- prefixes ------------------------------------------------------------------------------------------------------
REFUSED = {
    "": "names no file",
    ".": "names no file",
    "GeoDream/": "ends with a folder separator",
    "GeoDream\\": "ends with a folder separator",
    "a\0b": "NUL character",
    "x" * 250: "shorten it",
    "../outside": "outside the output folder",
    "GeoDream/../../outside": "outside the output folder",
    "/tmp/absolute": "outside the output folder",
    # Refused everywhere, so a workflow saves on Windows too; each named in the message.
    **{f"GeoDream/a{c}b": f"has {c!r}: characters Windows does not allow" for c in '<>:"|?*\x01\t\n\x1f'},
    "%date:yyyy-MM-dd%/mesh": "%date:...% is filled in by ComfyUI's editor only",
}


@pytest.mark.parametrize("prefix", list(REFUSED))
def test_bad_prefixes_are_refused_before_anything_is_written(pack_dirs, prefix):
    rule = REFUSED[prefix]
    with pytest.raises(GeoDreamError, match=re.escape(rule)) as caught:
        GeoDreamSaveMesh().save(_box(), "glb", prefix)
    assert repr(prefix)[:40] in str(caught.value) and "Traceback" not in str(caught.value)
    assert list(pack_dirs["output"].rglob("*")) == [] and not (pack_dirs["output"].parent / "output_00001_.glb").exists()
    # ComfyUI asks VALIDATE_INPUTS before it runs the graph: the same reason, for every save node.
    for node in (GeoDreamSaveMesh, GeoDreamSaveCostVolume, GeoDreamSaveField, GeoDreamSaveCameras):
        answer = node.VALIDATE_INPUTS(filename_prefix=prefix)
        assert isinstance(answer, str) and rule in answer
    assert GeoDreamSaveMesh.VALIDATE_INPUTS() is True  # a linked prefix is checked when the node runs


def test_prefixes_comfyui_accepts_land_where_it_puts_them(pack_dirs):
    root = pack_dirs["output"]
    assert host.save_output("GeoDream/mesh", (".glb",), lambda f, t: t[".glb"].write_bytes(b"1"))[".glb"] == \
        root / "GeoDream" / "mesh_00001_.glb"
    assert host.save_output("a/./b/../c", (".glb",), lambda f, t: t[".glb"].write_bytes(b"1"))[".glb"] == \
        root / "a" / "c_00001_.glb"
    dated = host.save_output("%year%/m", (".glb",), lambda f, t: t[".glb"].write_bytes(b"1"))[".glb"]
    assert dated.parent.name == time.strftime("%Y") and dated.parent.parent == root
    longest = "y" * (output_names.NAME_MAX - output_names.COUNTER - len(".safetensors") - atomic.TEMP_OVERHEAD)
    assert output_names.problem(longest, (".safetensors",)) is None
    assert "shorten" in output_names.problem(longest + "y", (".safetensors",))
    # What Windows allows in a name stays allowed (only <>:"|?* and control characters are refused).
    assert output_names.problem("my meshes/owl-v2 (final), #3 & co. [é]~'s!") is None


def test_obj_names_with_spaces_parse_in_trimesh_and_pywavefront(pack_dirs):
    pywavefront = pytest.importorskip("pywavefront")
    relative = GeoDreamSaveMesh().save(_box(), "obj", "my meshes/a b#c")["result"][0]
    obj = pack_dirs["output"] / relative
    assert obj.name == "a_b_c_00001_.obj" and obj.parent.name == "my meshes"
    assert sorted(p.name for p in obj.parent.iterdir()) == ["a_b_c_00001_.mtl", "a_b_c_00001_.obj", "a_b_c_00001_.png"]
    loaded = trimesh.load(obj, force="mesh")
    assert loaded.visual.material.image is not None and loaded.extents == pytest.approx([2, 2, 2])
    scene = pywavefront.Wavefront(str(obj), collect_faces=True, create_materials=False)
    (material,) = scene.materials.values()
    assert Path(material.texture.path).name == "a_b_c_00001_.png" and Path(material.texture.path).is_file()
    assert len(scene.mesh_list[0].faces) == 12


def test_write_failures_name_the_file_and_the_cause(tmp_path, monkeypatch):
    target = tmp_path / "run.pt"
    run_store.write(target, {"format": 1, "value": torch.ones(3)}, run_store.RunInfo("fam", 1, 1, 2, 2))

    def full_disk(state, f):
        f.write(b"PK" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534") from \
            OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(GeoDreamError, match=r"could not write '.*run.pt': the disk is full") as caught:
        run_store.write(target, {"format": 1, "value": torch.zeros(3)}, run_store.RunInfo("fam", 1, 2, 2, 2))
    assert "room for both" in str(caught.value) and "MB are free" in str(caught.value)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["value"], torch.ones(3))
    assert not _temporaries(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(GeoDreamError, match="not enough room .* needs about 1 MB"):
        run_store.write(target, {"format": 1, "value": torch.zeros(300_000)}, run_store.RunInfo("fam", 1, 2, 2, 2))
    assert torch.equal(torch.load(target, weights_only=True)["value"], torch.ones(3))


# --- a real full file system -----------------------------------------------------------------------------------------
FULL_DISK_CHILD = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import torch
from headless.pack import load_pack
pack = load_pack()
store, errors = pack.geodream_ops.run_store, pack.geodream_ops.errors
disk = Path(sys.argv[1])
out = {}
ckpt = disk / "refine" / "fam-seed1.pt"
store.write(ckpt, {"format": 1, "value": torch.arange(1000.0)}, store.RunInfo("fam", 1, 1, 2, 2))
(disk / "filler").write_bytes(b"\0" * (os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize - 600_000))
def attempt(key, fn):
    try:
        fn(); out[key] = "no error"
    except errors.GeoDreamError as err:
        out[key] = str(err)
attempt("checkpoint", lambda: store.write(ckpt, {"format": 1, "value": torch.zeros(400_000)},
                                          store.RunInfo("fam", 1, 2, 2, 2)))
# Underestimated on purpose: the disk fills during the write itself.
store.state_bytes = lambda state: 0
attempt("checkpoint_mid_write", lambda: store.write(ckpt, {"format": 1, "value": torch.zeros(400_000)},
                                                    store.RunInfo("fam", 1, 2, 2, 2)))
os.environ["GEODREAM_OUTPUT_DIR"] = str(disk / "output")
sys.path.insert(0, sys.argv[3])
import file_writers
mesh = file_writers.box(1.0)
mesh.texture = torch.rand(512, 512, 3)
attempt("mesh", lambda: pack.nodes.mesh_io.GeoDreamSaveMesh().save(mesh, "obj", "GeoDream/m"))
out["previous"] = torch.load(ckpt, weights_only=True)["value"].tolist() == list(range(1000))
out["files"] = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file() and p.name != "filler")
print(json.dumps(out))
"""


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_nothing_half_written(tmp_path):
    if shutil.which("unshare") is None or sys.platform != "linux":
        pytest.skip("needs Linux's unshare to mount a small tmpfs without root")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {tmp_path}"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this machine does not let the test mount a tmpfs ({probe.stderr.strip()})")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "child.py"
    script.write_text(FULL_DISK_CHILD)
    command = (f"mount -t tmpfs -o size=4m tmpfs {disk} && "
               f"{sys.executable} {script} {disk} {Path(__file__).resolve().parent.parent} {WRITERS.parent}")
    run = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True,
                         timeout=CHILD_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert "not enough room to write" in out["checkpoint"] and "fam-seed1.pt" in out["checkpoint"]
    assert "the disk is full" in out["checkpoint_mid_write"] and "fam-seed1.pt" in out["checkpoint_mid_write"]
    assert "the disk is full" in out["mesh"] and "m_00001_.obj" in out["mesh"]
    assert out["previous"] is True
    # Nothing under a final name but the previous checkpoint and its .json; no temporary left.
    assert out["files"] == ["refine/fam-seed1.json", "refine/fam-seed1.pt"]


def test_a_name_taken_between_listing_and_publishing_is_never_overwritten(tmp_path, monkeypatch):
    """The race, made deterministic: the listing says counter 1 is free (another writer has not published yet when
    we list), but by the time this writer publishes, 00001 and its OBJ companion are taken: it moves on to 00002,
    withdraws nothing of the other writer's, and leaves no temporary."""
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.setattr(atomic, "next_counter", lambda folder, stem: 1)
    (folder / "m_00001_.mtl").write_bytes(b"theirs")  # the other writer publishes its companions first

    def write(finals, temps):
        for suffix, path in temps.items():
            path.write_bytes(f"ours {finals[suffix].name}".encode())

    finals = atomic.write_new(folder, "m", (".obj", ".mtl"), write)
    assert finals[".obj"].name == "m_00002_.obj" and finals[".obj"].read_bytes() == b"ours m_00002_.obj"
    assert (folder / "m_00001_.mtl").read_bytes() == b"theirs" and not (folder / "m_00001_.obj").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["m_00001_.mtl", "m_00002_.mtl", "m_00002_.obj"]
