"""The one reader of every weights and checkpoint file the pack opens: published models (.pt/.pth/.bin/.ckpt pickles
read with ``weights_only``, .safetensors, diffusers folders) and our own files (resume checkpoints, saved fields and
cost volumes). Whatever goes wrong (a truncated download, a corrupted file, the wrong model in the right folder, a
file of another layout) becomes one GeoDreamError naming the file, what was expected and what was found, and the
way out (``fix``: re-download it from where, pick another file, turn resume off or delete the checkpoint).

Suffixes are matched in any letter case; wrapped state dicts ("state_dict", "module", "model" and DataParallel's
``module.`` prefix) are unwrapped; tensors keep their stored dtype (fp16 files load: load_state_dict converts)."""
from __future__ import annotations

import json
import logging
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import GeoDreamError

log = logging.getLogger("GeoDream")

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
WRAPPERS = ("state_dict", "module", "model")

# Key signatures of the models a user may put in the wrong place: (a key, or a key prefix ending in ".", name).
SIGNATURES = (
    ("model.diffusion_model.camera_embed.0.weight", "MVDream's single-file checkpoint (sd-v2.1-base-4view)"),
    ("model.diffusion_model.input_blocks.0.0.weight", "a Stable Diffusion single-file checkpoint"),
    ("camera_embed.0.weight", "MVDream's multi-view UNet"),
    ("input_blocks.0.0.weight", "an original-layout (ldm) UNet"),
    ("conv_in.weight", "a diffusers UNet"),
    ("encoder.conv_in.weight", "a diffusers VAE"),
    ("text_model.embeddings.token_embedding.weight", "a transformers CLIP text encoder"),
    ("vision_model.embeddings.patch_embedding.weight", "a transformers CLIP image encoder"),
    ("point_encoder.cls_token", "a Uni3D point encoder"),
    ("visual.", "an open_clip CLIP image tower"),
    ("token_embedding.weight", "an open_clip CLIP text tower"),
    ("sdf_network_lod0", "SparseNeuS's prior checkpoint (ckpt_215000.pth)"),
    ("pyramid_feature_network", "SparseNeuS's prior checkpoint (ckpt_215000.pth)"),
    ("format", "a GeoDream resume checkpoint"),
    ("volume", "a GeoDream cost volume or field"),
)


def identify(keys) -> str:
    """What a checkpoint with these top-level ``keys`` looks like, for error messages."""
    keys = [k for k in keys if isinstance(k, str)]
    for signature, name in SIGNATURES:
        if any(k == signature or (signature.endswith(".") and k.startswith(signature)) for k in keys):
            return name
    sample = ", ".join(sorted(keys)[:4])
    count = f"{len(keys)} {'entry' if len(keys) == 1 else 'entries'}"
    return f"{count} ({sample}{', ...' if len(keys) > 4 else ''})" if keys else "nothing"


def _fail(path: Path, what: str, found: str, fix: str) -> GeoDreamError:
    return GeoDreamError(f"GeoDream: '{path}' is not {what}: {found}. {fix}")


def _truncation(path: Path) -> str | None:
    """Why ``path`` is incomplete, when its own framing says so (zip directory or safetensors header), else None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] == b"PK":
            return None if zipfile.is_zipfile(path) else \
                f"it starts as a PyTorch zip archive but its end is missing ({size:,} bytes): the download stopped early"
        if len(head) == 8 and path.suffix.lower() == ".safetensors":
            header_size = struct.unpack("<Q", head)[0]
            if header_size > size - 8:
                return f"its header announces {header_size:,} bytes but the file holds {size:,}: it is cut short"
            try:
                header = json.loads(f.read(header_size))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError):
                return "its header is not valid safetensors JSON: the file is corrupted"
            if 8 + header_size + end > size:
                return f"it holds {size:,} of its {8 + header_size + end:,} bytes: the download stopped early"
    return None


def _check_file(path: Path, what: str, fix: str) -> None:
    if path.is_dir():
        raise _fail(path, what, "it is a folder, and a single file was expected", fix)
    if not path.is_file():
        raise GeoDreamError(f"GeoDream: {what} was expected at '{path}', but there is no such file. {fix}")
    if path.stat().st_size == 0:
        raise _fail(path, what, "the file is empty (0 bytes)", fix)
    reason = _truncation(path)
    if reason:
        raise _fail(path, what, reason, fix)


def read_safetensors(path, what: str, fix: str, keep: Callable[[str], bool] = lambda key: True):
    """(tensors {name: tensor} of the keys ``keep`` accepts, metadata dict) of a .safetensors file, read lazily."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path, what, fix)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys() if keep(k)}, dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError / ValueError
        raise _fail(path, what, f"safetensors cannot read it ({err}); the file is corrupted", fix) from err


def read_checkpoint(path, what: str, fix: str, trusted_pickle: bool = False, device="cpu", mmap: bool = True) -> Any:
    """The object stored in ``path`` (.safetensors: its tensors; pickles: whatever ``torch.load`` returns, tensors
    only unless ``trusted_pickle``: a published file known to pickle its training config, loaded in full with a
    warning). ``what``: the expected content for the message ("MVDream's sd-v2.1-base-4view.pt"); ``fix``: what
    the user should do. ``mmap``: map a zip-format file rather than read it (published weights; not for files the
    pack rewrites in place, which Windows cannot replace while mapped). Raises GeoDreamError for anything
    unreadable."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        return read_safetensors(path, what, fix)[0]
    _check_file(path, what, fix)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise _fail(path, what, f"'{path.suffix}' is not a weights file (.safetensors, {', '.join(PICKLE_SUFFIXES)})", fix)
    is_zip = zipfile.is_zipfile(path)  # torch.save's format since 1.6; older files are a bare pickle
    with open(path, "rb") as f:
        if not is_zip and f.read(1) != b"\x80":  # neither torch.save's zip nor its legacy pickle (protocol 2+)
            raise _fail(path, what, "it is not a PyTorch file at all (neither a zip archive nor a pickle)", fix)
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as err:
        if not trusted_pickle:
            raise _fail(path, what, "it holds Python objects besides tensors, which the pack does not run", fix) from err
        log.warning("GeoDream: %s holds more than tensors; loading it with full unpickling", path.name)
        try:
            return torch.load(path, map_location=device, weights_only=False)
        except Exception as inner:
            raise _fail(path, what, f"PyTorch cannot read it ({inner})", fix) from inner
    except Exception as err:  # RuntimeError from the zip reader, EOFError, struct errors of a damaged file
        raise _fail(path, what, f"PyTorch cannot read it ({type(err).__name__}: {err}); the file is damaged or of "
                    "another format", fix) from err


def read_resume_checkpoint(path, what: str, device="cpu") -> dict:
    """One of the pack's own resume checkpoints (a dict written by torch.save through atomic_write), on ``device``;
    anything unreadable is a GeoDreamError whose way out is to start over."""
    path = Path(path)
    fix = f"Queue again with resume off to start over, or delete '{path}'."
    state = read_checkpoint(path, what, fix, device=device, mmap=False)
    if not isinstance(state, dict):
        raise _fail(path, what, f"it holds a {type(state).__name__}", fix)
    return state


def unwrap_state_dict(state: Any) -> dict[str, torch.Tensor]:
    """The tensors of a possibly wrapped state dict: descends into "state_dict" / "module" / "model" entries that
    are dicts, drops DataParallel's ``module.`` prefix and every non-tensor entry."""
    while isinstance(state, dict):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        return {}
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path, what: str, fix: str, required=(), trusted_pickle: bool = False,
                    keep: Callable[[str], bool] = lambda key: True) -> dict[str, torch.Tensor]:
    """The (unwrapped) tensors of a weights file, checked to hold every key in ``required``: a file without them is
    refused as the wrong model, saying what it looks like (``identify``). ``keep`` filters keys (safetensors are then
    never read in full)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        raw = read_safetensors(path, what, fix, keep)[0]
    else:
        raw = read_checkpoint(path, what, fix, trusted_pickle)
    state = {k: v for k, v in unwrap_state_dict(raw).items() if keep(k)}
    missing = [k for k in required if k not in state]
    if missing or not state:
        keys = raw.keys() if isinstance(raw, dict) and not state else state.keys()
        raise _fail(path, what, f"it holds {identify(keys)} (no {missing[0] if missing else 'tensor the model uses'})", fix)
    return state


def load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path, what: str, fix: str,
                 strict: bool = True):
    """``module.load_state_dict(state)`` (its result returned) with every mismatch summarised in one GeoDreamError (counts and the first
    of each kind) instead of torch's list of hundreds of lines. ``strict=False`` tolerates missing and unexpected
    keys but never a shape mismatch."""
    expected = module.state_dict()
    mismatched = [f"{k} {tuple(v.shape)} (expected {tuple(expected[k].shape)})" for k, v in state.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state] if strict else []
    unexpected = [k for k in state if k not in expected] if strict else []
    if mismatched or missing or unexpected:
        found = "; ".join(f"{len(items)} {kind}, e.g. {items[0]}" for kind, items in
                          (("tensors of another shape", mismatched), ("missing", missing), ("unexpected", unexpected))
                          if items)
        looks = identify(state.keys())
        raise _fail(Path(path), what, f"its weights do not fit ({found}); it holds {looks}", fix)
    return module.load_state_dict(state, strict=strict)


def from_folder(load: Callable[[], Any], folder, what: str, fix: str) -> Any:
    """``load()`` (a library's from_pretrained of one part of a diffusers folder) with its failures, e.g. a
    truncated weights file, turned into a GeoDreamError naming the damaged file where one is found."""
    folder = Path(folder)
    try:
        return load()
    except GeoDreamError:
        raise
    except Exception as err:
        files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES)]
        for file in files:
            reason = _truncation(file) if file.stat().st_size else "the file is empty (0 bytes)"
            if reason:
                raise _fail(file, what, reason, fix) from err
        raise _fail(folder, what, f"it could not be loaded ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]})",
                    fix) from err
