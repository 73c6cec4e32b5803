"""The only module that touches ComfyUI. Outside ComfyUI (tests, the headless runner) it falls back to plain
equivalents: tqdm progress, a cooperative interrupt flag, cuda-if-available, CUDA's cache for ComfyUI's memory
manager, model folders under
``$GEODREAM_MODELS_DIR`` (else the ComfyUI install the pack sits in, else ``./models``; geodream_ops/model_paths.py)
and output under ``$GEODREAM_OUTPUT_DIR`` (default ``./output``)."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from pathlib import Path

import torch

from ..geodream_ops import cancel, model_manifest, model_paths

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


def output_entry(path: Path) -> dict:
    """How ComfyUI names a file written to the output folder in a node's "ui" result."""
    subfolder = Path(path).parent.relative_to(output_dir()).as_posix()
    return {"filename": Path(path).name, "subfolder": "" if subfolder == "." else subfolder, "type": "output"}


def next_output_path(filename_prefix: str, extension: str) -> Path:
    """``<output>/<prefix>_00001_.<ext>`` with the counter one past the highest existing, as ComfyUI names files."""
    base = output_dir()
    target = (base / filename_prefix).resolve()
    if base.resolve() not in target.parents and target != base.resolve():
        raise ValueError(f"GeoDream: filename_prefix '{filename_prefix}' points outside the output folder.")
    folder, stem = target.parent, target.name
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_\.")
    counters = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return folder / f"{stem}_{max(counters, default=0) + 1:05d}_.{extension.lstrip('.')}"


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
