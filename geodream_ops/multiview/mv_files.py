"""The published multi-view model folders: the check that a diffusers folder is complete (a missing part is an error
naming the folder and every expected file, not a deep traceback). Files themselves are read by model_files."""
from __future__ import annotations

import json
from pathlib import Path

from .. import model_manifest
from ..errors import GeoDreamError


class ModelFilesError(GeoDreamError, FileNotFoundError):
    """The model folder or file is incomplete or of the wrong kind; the message says what to put where."""


def require_files(folder: Path, expected: list[str], what: str, source: str) -> None:
    """Raise a ModelFilesError listing every expected path (relative to ``folder``) that is missing.
    An entry "a|b" is satisfied by either file (weights may be .safetensors or .bin)."""
    missing = [entry for entry in expected if not any((folder / alt).is_file() for alt in entry.split("|"))]
    if missing:
        raise ModelFilesError(
            f"GeoDream: {what} folder '{folder}' is incomplete; missing: {', '.join(m.replace('|', ' or ') for m in missing)}. "
            f"Expected the published diffusers layout: {', '.join(e.split('|')[0] for e in expected)} "
            f"(the whole {source} repository, downloaded into models/diffusers/<name>/). "
            + model_manifest.fetch_hint(folder.name))


def weights_file(folder: Path, stem: str = "diffusion_pytorch_model") -> Path:
    for suffix in (".safetensors", ".bin"):
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    raise ModelFilesError(f"GeoDream: no {stem}.safetensors (or .bin) in '{folder}'.")


def read_json(path: Path) -> dict:
    """A model folder's JSON file; ModelFilesError naming it when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ModelFilesError(f"GeoDream: '{path}' is not valid JSON ({err}); the model folder is damaged: "
                              "download that file (or the whole folder) again.") from err
