"""Child processes for tests/test_file_writes.py: ``python tests/file_writers.py ROLE FOLDER [ARGS]`` with
$GEODREAM_OUTPUT_DIR set. Every role that races waits at a file barrier (FOLDER/ready-<id>, then FOLDER/go from the
parent) so the writers start at the same moment; every wait is bounded (WAIT_S) so a broken test ends."""
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WAIT_S = 60


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {path}")
        time.sleep(0.005)


def barrier(folder: Path, ident: str) -> None:
    (folder / f"ready-{ident}").touch()
    wait_for(folder / "go")


def box(scale: float, textured: bool = True):
    """A closed box of half-size ``scale`` (a TexturedMesh), textured when asked."""
    import torch
    import trimesh

    from headless.pack import load_pack

    TexturedMesh = load_pack().geodream_ops.mesh.textured_mesh.TexturedMesh
    shape = trimesh.creation.box(extents=[2 * scale] * 3)
    vertices, faces = torch.tensor(shape.vertices, dtype=torch.float32), torch.tensor(shape.faces)
    if not textured:
        return TexturedMesh(vertices, faces)
    uvs = (vertices[:, :2] / (2 * scale) + 0.5).clamp(0, 1)
    texture = torch.linspace(0, 1, 8 * 8 * 3).reshape(8, 8, 3)
    return TexturedMesh(vertices, faces, uvs=uvs, texture=texture)


def save_mesh(folder: Path, ident: str, prefix: str, file_format: str) -> None:
    """Save a box of half-size float(ident) through GeoDream Save Mesh after the barrier; print the path."""
    from headless.pack import load_pack

    node = load_pack().nodes.mesh_io.GeoDreamSaveMesh()
    mesh = box(float(ident))
    barrier(folder, ident)
    print(json.dumps(node.save(mesh, file_format, prefix)["result"][0]))


def write_checkpoint(folder: Path, ident: str, target: str) -> None:
    """Write one run's checkpoint (a tensor full of float(ident)) after the barrier."""
    import torch

    from headless.pack import load_pack

    store = load_pack().geodream_ops.run_store
    state = {"format": 1, "value": torch.full((256, 1024), float(ident))}
    barrier(folder, ident)
    store.write(Path(target), state, store.RunInfo("fam", int(ident), 1, 2, 2))
    print(json.dumps("ok"))


def hang_in_checkpoint(folder: Path, ident: str, target: str) -> None:
    """Start writing a checkpoint, write half of it, signal, and hang until killed."""
    import torch

    from headless.pack import load_pack

    store = load_pack().geodream_ops.run_store

    def half_then_hang(state, f):
        f.write(b"PK\x03\x04" + b"\0" * 100_000)
        f.flush()
        (folder / f"ready-{ident}").touch()
        time.sleep(WAIT_S)

    torch.save = half_then_hang
    store.write(Path(target), {"format": 1, "value": torch.zeros(10)}, store.RunInfo("fam", 9, 1, 2, 2))


def hang_in_obj_save(folder: Path, ident: str, prefix: str) -> None:
    """Save an OBJ through Save Mesh but hang after its first file's bytes are written, until killed."""
    from headless.pack import load_pack

    mesh_io = load_pack().nodes.mesh_io
    original = mesh_io.mesh_files

    class Hanging(dict):
        def items(self):
            for number, pair in enumerate(super().items()):
                if number == 1:
                    (folder / f"ready-{ident}").touch()
                    time.sleep(WAIT_S)
                yield pair

    mesh_io.mesh_files = lambda *args: Hanging(original(*args))
    mesh_io.GeoDreamSaveMesh().save(box(1.0), "obj", prefix)


if __name__ == "__main__":
    role, folder, *rest = sys.argv[1:]
    globals()[role](Path(folder), *rest)
