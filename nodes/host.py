"""The only module that touches ComfyUI. Outside ComfyUI (tests, the headless runner) it falls back to plain
equivalents: tqdm progress, a cooperative interrupt flag, cuda-if-available, CUDA's cache for ComfyUI's memory
manager, model folders under
``$GEODREAM_MODELS_DIR`` (else the ComfyUI install the pack sits in, else ``./models``; geodream_ops/model_paths.py)
output under ``$GEODREAM_OUTPUT_DIR`` (default ``./output``) and previews under ``$GEODREAM_TEMP_DIR`` (default
the system's temporary folder, ``geodream-previews``)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

import torch

from ..geodream_ops import atomic, cancel, model_manifest, model_paths, output_names

log = logging.getLogger("GeoDream")

MODEL_EXTENSIONS = {".safetensors", ".ckpt", ".pth", ".pt", ".bin"}
# Model folders of our own, registered with ComfyUI beside its standard ones.
PACK_MODEL_FOLDERS = ("geodream",)


def _comfy():
    """ComfyUI's modules when running inside it, else None."""
    try:
        import comfy.model_management as mm
        import comfy.utils as cu
        import folder_paths
    except ImportError:
        return None
    return mm, cu, folder_paths


def in_comfyui() -> bool:
    return _comfy() is not None


class Interrupted(Exception):
    """Raised at a safe point when the user (or the runner) asked to stop."""


_interrupt = threading.Event()


def request_interrupt() -> None:
    _interrupt.set()


def clear_interrupt() -> None:
    _interrupt.clear()


def check_interrupt() -> None:
    comfy = _comfy()
    if comfy is not None:
        comfy[0].throw_exception_if_processing_interrupted()
    if _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("interrupted by request")


# The library's long loops (render chunks, grid queries, bakes) check between pieces (geodream_ops/cancel.py).
cancel.install(check_interrupt)


def needs_autograd(function):
    """For node functions that optimise, or load models that are backpropagated through: ComfyUI runs every node
    under torch.inference_mode(), whose tensors autograd refuses."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.inference_mode(False), torch.enable_grad():
            return function(*args, **kwargs)
    return wrapper


def device() -> torch.device:
    override = os.environ.get("GEODREAM_DEVICE")
    if override:
        return torch.device(override)
    comfy = _comfy()
    if comfy is not None:
        return comfy[0].get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    comfy = _comfy()
    return comfy[0].unet_offload_device() if comfy is not None else torch.device("cpu")


def soft_empty_cache() -> None:
    comfy = _comfy()
    if comfy is not None:
        comfy[0].soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def module_bytes(modules, dtype: torch.dtype | None = None) -> int:
    """Bytes of the parameters and buffers of ``modules`` (each tensor once), in ``dtype`` where given."""
    tensors = {id(t): t for m in modules for t in (*m.parameters(), *m.buffers())}.values()
    return sum(t.numel() * (torch.finfo(dtype).bits // 8 if dtype is not None and t.is_floating_point()
                            else t.element_size()) for t in tensors)


def make_room(bytes_needed: int, target: torch.device | None = None) -> None:
    """Before our models move to ``target`` (default: the compute device): in ComfyUI, its memory manager frees
    ``bytes_needed`` plus its inference reserve there, unloading (offloading) the other models it holds, as core
    nodes do before they load theirs; elsewhere CUDA's cache is emptied."""
    target = torch.device(target or device())
    comfy = _comfy()
    if comfy is not None:
        mm = comfy[0]
        mm.free_memory(int(bytes_needed) + mm.minimum_inference_memory(), target)
    elif target.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def on_device(modules, dtype: torch.dtype | None = None, working_bytes: int = 0, move=None):
    """Runs the block with ``modules`` on the compute device (yielded): room is made first (make_room: their size
    in ``dtype`` plus ``working_bytes``), and afterwards, whatever happens, they go back to ComfyUI's offload device
    (the CPU elsewhere) and the cache is emptied. ``move(device)`` moves objects that keep their own device (e.g.
    the guidance); by default each module's ``to(device, dtype)``."""
    target = device()
    make_room(module_bytes(modules, dtype) + working_bytes, target)

    def move_all(where, with_dtype):
        if move is not None:
            move(where)
            return
        for module in modules:
            module.to(where)
            if with_dtype is not None and any(p.dtype != with_dtype for p in module.parameters()):
                module.to(with_dtype)  # only a real cast: diffusers warns at every dtype it is given

    move_all(target, dtype)
    try:
        yield target
    finally:
        move_all(offload_device(), None)
        soft_empty_cache()


class Progress:
    """A progress bar over ``total`` steps: ComfyUI's in the editor, tqdm elsewhere. A ``preview`` (PIL image) goes
    to the running node's live preview panel (web/preview.js), captioned with the step and ``note`` (e.g. the
    checkpoint a run resumed from)."""

    def __init__(self, total: int, desc: str = "GeoDream", note: str = ""):
        self.total, self.value, self.note = total, 0, note
        comfy = _comfy()
        if comfy is not None:
            self._bar, self._tqdm = comfy[1].ProgressBar(total), None
        else:
            from tqdm.auto import tqdm

            self._bar, self._tqdm = None, tqdm(total=total, desc=desc, leave=False)

    def update(self, value: int | None = None, preview=None) -> None:
        step = self.value + 1 if value is None else value
        if self._bar is not None:
            self._bar.update_absolute(step, self.total)
            if preview is not None:
                send_image_preview(preview, step, self.total, self.note)
        else:
            self._tqdm.update(step - self.value)
        self.value = step

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


PREVIEW_EVENT = "geodream.preview"  # web/preview.js listens for it


def send_preview(event: str, data: dict) -> None:
    """Send a message to the editor (our web extension listens for ``geodream.*`` events)."""
    try:
        from server import PromptServer
    except ImportError:
        log.debug("preview %s (no editor attached)", event)
        return
    PromptServer.instance.send_sync(event, data)


def send_image_preview(image, step: int, total: int, note: str = "") -> None:
    """Show a PIL image (e.g. a turntable render) on the running node, captioned with the step and ``note``."""
    try:
        from server import PromptServer
    except ImportError:
        return
    import base64
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    send_preview(PREVIEW_EVENT, {"node": PromptServer.instance.last_node_id, "step": step, "total": total,
                                 "note": note, "image": base64.b64encode(buffer.getvalue()).decode("ascii")})


# --- folders -----------------------------------------------------------------------------------------------------
def register_model_folders() -> None:
    """Make ComfyUI list files in models/geodream/ (called once when the pack loads)."""
    comfy = _comfy()
    if comfy is None:
        return
    folder_paths = comfy[2]
    for name in PACK_MODEL_FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            path = os.path.join(folder_paths.models_dir, name)
            folder_paths.folder_names_and_paths[name] = ([path], MODEL_EXTENSIONS)


def model_folders(folder: str) -> list[Path]:
    """Every directory searched for models of a kind ("geodream", "diffusers", "checkpoints", "clip"): ComfyUI's
    in the editor; elsewhere those of geodream_ops/model_paths.py (the same ones the model command fills)."""
    comfy = _comfy()
    if comfy is not None:
        try:
            return [Path(p) for p in comfy[2].get_folder_paths(folder)]
        except KeyError:
            return [Path(comfy[2].models_dir) / folder]
    return model_paths.search_folders(folder)


def list_models(folder: str, directories: bool = False) -> list[str]:
    """Names of model files (or, with ``directories``, of model folders such as diffusers folders) of a kind."""
    names = set()
    for root in model_folders(folder):
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            if entry.name.startswith("."):  # the model command's records and unfinished downloads
                continue
            if directories and entry.is_dir():
                names.add(entry.name)
            elif not directories and entry.is_file() and entry.suffix.lower() in MODEL_EXTENSIONS:
                names.add(entry.name)
    return sorted(names)


def model_choices(node: str, input_name: str, present: list[str]) -> list[str]:
    """A loader's list for ``input_name``: files that can be its model first, then the rest, then the manifest's
    models not downloaded yet (choosing one says which command fetches it); see model_manifest.order_choices."""
    entries = model_manifest.entries_for(node, input_name)

    def locate(choice: str) -> Path | None:
        kind, _, name = choice.rpartition("/")  # "diffusers/x" in lists of several kinds, else a bare name
        kinds = [kind] if kind else list(dict.fromkeys(e.folder for e in entries))
        return next((root / name for k in kinds for root in model_folders(k) if (root / name).exists()), None)

    return model_manifest.order_choices(node, input_name, present, locate)


def find_model(folders: str | tuple[str, ...], name: str, node: str | None = None,
               input_name: str | None = None) -> Path:
    """The full path of a model file or folder in the folders of one kind (or several), or a GeoDreamError naming
    the model, every folder searched and the command that fetches it (``node``/``input_name`` narrow the models
    offered when the name is not one of the manifest's)."""
    kinds = (folders,) if isinstance(folders, str) else folders
    roots = [root for kind in kinds for root in model_folders(kind)]
    for root in roots:
        candidate = root / name
        if candidate.exists():
            return candidate
    manifest = model_manifest.load_manifest()
    known = [e for e in manifest.values() if e.folder in kinds and name in (e.name, *e.also_named)]
    if known:
        raise model_manifest.ModelNotFound(model_manifest.missing_message(known[0], roots, name))
    offered = (model_manifest.entries_for(node, input_name, manifest) if node else
               [e for e in manifest.values() if e.folder in kinds])
    raise model_manifest.ModelNotFound(model_manifest.unknown_message(name, kinds, roots, offered))


def output_dir() -> Path:
    comfy = _comfy()
    if comfy is not None:
        return Path(comfy[2].get_output_directory())
    return Path(os.environ.get("GEODREAM_OUTPUT_DIR", "output")).resolve()


def input_dir() -> Path:
    comfy = _comfy()
    if comfy is not None:
        return Path(comfy[2].get_input_directory())
    return Path(os.environ.get("GEODREAM_INPUT_DIR", "input")).resolve()


def temp_dir() -> Path:
    """Where previews go (ComfyUI's temp folder, which it empties at start): not outputs, never listed as written."""
    comfy = _comfy()
    if comfy is not None:
        return Path(comfy[2].get_temp_directory())
    return Path(os.environ.get("GEODREAM_TEMP_DIR", Path(tempfile.gettempdir()) / "geodream-previews")).resolve()


FOLDERS = {"output": output_dir, "temp": temp_dir}  # a "ui" file entry's "type" -> its folder


def output_entry(path: Path, kind: str = "output") -> dict:
    """How ComfyUI names a file written to the output (or, ``kind`` "temp", the temp) folder in a node's "ui"
    result."""
    subfolder = Path(path).parent.relative_to(FOLDERS[kind]()).as_posix()
    return {"filename": Path(path).name, "subfolder": "" if subfolder == "." else subfolder, "type": kind}


def save_output(filename_prefix: str, suffixes: tuple[str, ...], write, needed: int | None = None,
                rename=None, kind: str = "output") -> dict[str, Path]:
    """Write a new numbered set of files for ``filename_prefix`` under the output folder (``kind`` "temp": the
    temp folder, for previews), as ComfyUI names them (``<prefix>_00001_<suffix>``), each name claimed exclusively
    and every file whole or absent (geodream_ops/atomic.write_new: ``write(finals, temps)`` fills the temporaries).
    A prefix that cannot name files there is a GeoDreamError naming it and the rule (geodream_ops/output_names.py).
    ``rename`` maps the file stem (e.g. to a name an OBJ can reference). Returns {suffix: final path}."""
    folder, stem = output_names.resolve(filename_prefix, FOLDERS[kind](), suffixes)
    stem = rename(stem) if rename else stem
    return atomic.write_new(folder, stem, suffixes, write, needed)


def check_prefix(filename_prefix, suffixes: tuple[str, ...]):
    """A save node's VALIDATE_INPUTS answer for its prefix: True, or the reason ComfyUI shows before anything runs
    (None: the prefix comes through a link and is checked when the node runs)."""
    if filename_prefix is None:
        return True
    reason = output_names.problem(filename_prefix, suffixes)
    return True if reason is None else f"GeoDream: {reason}."


OUTPUT_TAG, INPUT_TAG = " [output]", " [input]"  # ComfyUI's annotated file names (folder_paths.annotated_filepath)


def listed_files(suffixes: tuple[str, ...], folders: tuple[str, ...] = ("input", "output")) -> list[str]:
    """Files with one of ``suffixes`` anywhere under the input folder (as they are named there) and the output
    folder (annotated " [output]", as ComfyUI names them), so a loader lists what the pack's save nodes write.
    Hidden files (temporaries, records) are left out."""
    found = []
    for kind in folders:
        root = input_dir() if kind == "input" else output_dir()
        if not root.is_dir():
            continue
        names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in suffixes and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        found += names if kind == "input" else [name + OUTPUT_TAG for name in names]
    return found


def annotated_path(name: str) -> Path:
    """The file a listed (possibly annotated) name means: "x [output]" under the output folder, "x [input]" or a
    plain name under the input folder. A name leading outside that folder is a GeoDreamError."""
    from ..geodream_ops.errors import GeoDreamError

    root = input_dir()
    if name.endswith(OUTPUT_TAG):
        name, root = name[: -len(OUTPUT_TAG)], output_dir()
    elif name.endswith(INPUT_TAG):
        name = name[: -len(INPUT_TAG)]
    path = Path(os.path.abspath(root / name))
    if Path(os.path.abspath(root)) not in path.parents:
        raise GeoDreamError(f"GeoDream: '{name}' leads outside the folder {root}; pick a file listed by the node.")
    return path


# --- IS_CHANGED ----------------------------------------------------------------------------------------------------
HASHED_BYTES = 64 * 2 ** 20  # files up to this size are hashed whole, as core LoadImage hashes its image
_EDGE = 2 ** 20


def _companions(path: Path) -> list[Path]:
    """Files a mesh file reads beside itself: an OBJ's .mtl files and their textures, a glTF's buffers and images."""
    found = []
    try:
        if path.suffix.lower() == ".obj":
            with open(path, encoding="utf-8", errors="replace") as f:
                libraries = [line.split(None, 1)[1].strip() for line in f if line.startswith("mtllib ")]
            for library in libraries:
                mtl = path.parent / library
                found.append(mtl)
                if mtl.is_file():
                    found += [path.parent / line.split()[-1] for line in mtl.read_text("utf-8", "replace").splitlines()
                              if line.strip().lower().startswith("map_") and len(line.split()) > 1]
        elif path.suffix.lower() == ".gltf":
            import json

            record = json.loads(path.read_text(encoding="utf-8"))
            found += [path.parent / item["uri"] for key in ("buffers", "images") for item in record.get(key, [])
                      if "uri" in item and not item["uri"].startswith("data:")]
    except (OSError, ValueError, IndexError):
        pass
    return found


def file_fingerprint(*paths) -> str:
    """What changes when a file a node reads changes: its content's sha256 (size, modification time and inode plus
    its first and last MB for files over 64 MB), with a mesh's companion files; a missing file fingerprints as
    missing, so creating it counts as a change. A node's IS_CHANGED returns it, as core LoadImage does, so a file
    replaced under its name is read again instead of the cached result being served."""
    digest = hashlib.sha256()
    for path in paths:
        for file in (Path(path), *_companions(Path(path))):
            digest.update(str(file).encode())
            try:
                stat = file.stat()
                if stat.st_size <= HASHED_BYTES:
                    digest.update(file.read_bytes())
                else:
                    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}:{stat.st_ctime_ns}".encode())
                    with open(file, "rb") as f:
                        digest.update(f.read(_EDGE))
                        f.seek(-_EDGE, os.SEEK_END)
                        digest.update(f.read(_EDGE))
            except OSError:
                digest.update(b"missing")
    return digest.hexdigest()


def model_fingerprint(kinds: str | tuple[str, ...], name: str) -> str:
    """IS_CHANGED for a model loader: where ``name`` is found among the folders of ``kinds`` and the size, time and
    inode of the file (of every file of a diffusers folder). Models are not hashed (gigabytes per queue); a model
    replaced under its name, or one that appears or disappears, still changes it."""
    digest = hashlib.sha256()
    if not name:
        return ""
    for kind in (kinds,) if isinstance(kinds, str) else kinds:
        for root in model_folders(kind):
            target = root / name
            for file in sorted(target.rglob("*")) if target.is_dir() else [target]:
                try:
                    stat = file.stat()
                    digest.update(f"{file}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}".encode())
                except OSError:
                    pass
    return digest.hexdigest()


# --- core 3D types ------------------------------------------------------------------------------------------------
class StandInMesh:
    """Outside ComfyUI: the attributes of ComfyUI's core MESH (vertices [B, N, 3], faces [B, M, 3], optional uvs
    [B, N, 2] and texture [B, H, W, 3])."""

    def __init__(self, vertices, faces, uvs=None, texture=None):
        self.vertices, self.faces, self.uvs, self.texture = vertices, faces, uvs, texture


def core_mesh(vertices: torch.Tensor, faces: torch.Tensor, uvs=None, texture=None):
    """ComfyUI's core MESH (what SaveGLB and the 3D nodes take). Newer ComfyUI keeps it in comfy_api and accepts
    uvs and a texture; older versions define it in comfy_extras/nodes_hunyuan3d.py with geometry only."""
    if _comfy() is None:
        return StandInMesh(vertices, faces, uvs, texture)
    try:
        from comfy_api.latest import Types

        return Types.MESH(vertices, faces, uvs=uvs, texture=texture)
    except (ImportError, AttributeError, TypeError):
        from comfy_extras.nodes_hunyuan3d import MESH

        return MESH(vertices, faces)
