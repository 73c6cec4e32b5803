"""Where model files live when ComfyUI's own folder_paths is not running (the headless runner, the model command):
``$GEODREAM_MODELS_DIR`` if set; else, for a pack inside a ComfyUI install (``ComfyUI/custom_nodes/<pack>/``), ComfyUI's
``models/`` folder plus the extra folders of its ``extra_model_paths.yaml``, in ComfyUI's order; else ``./models``.
Never imports ComfyUI; reads its files as ComfyUI's utils/extra_config.py does.

A pack symlinked into ``custom_nodes/`` (a clone elsewhere, linked in) is inside ComfyUI only by the path it was
reached by, not by its resolved one, so every such path is tried (pack_paths): the one it was imported by, and the
shell's working folder ($PWD keeps the link; the process's own working folder is resolved) when that is the pack."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import GeoDreamError

PACK_ROOT = Path(__file__).resolve().parent.parent
# ComfyUI's renamed model folders (folder_paths.map_legacy): a file there is found under either name.
LEGACY_NAMES = {"unet": "diffusion_models", "clip": "text_encoders"}


def pack_paths() -> list[Path]:
    """The paths this pack was reached by, links kept, then its resolved one (PACK_ROOT)."""
    found = [Path(os.path.abspath(__file__)).parent.parent]
    pwd = os.environ.get("PWD")
    if pwd and os.path.isabs(pwd):
        for candidate in (Path(pwd), *Path(pwd).parents):
            try:
                if os.path.samefile(candidate, PACK_ROOT):
                    found.append(candidate)
                    break
            except OSError:
                continue
    return list(dict.fromkeys([*found, PACK_ROOT]))


def comfyui_root(pack_root: Path | None = None) -> Path | None:
    """The ComfyUI install this pack (or ``pack_root``) sits in (``<root>/custom_nodes/<pack>``) by any path it
    was reached by (pack_paths), or None."""
    for path in [pack_root] if pack_root else pack_paths():
        parent = path.parent
        if parent.name == "custom_nodes" and (parent.parent / "folder_paths.py").is_file():
            return parent.parent
    return None


def models_folder_reason(models_dir: str | os.PathLike | None = None) -> str:
    """Which models folder search_folders uses and why, for the model command to print before it does anything."""
    if models_dir:
        return f"models folder {Path(models_dir).expanduser().resolve()} (from --models-dir)"
    if os.environ.get("GEODREAM_MODELS_DIR"):
        return f"models folder {Path(os.environ['GEODREAM_MODELS_DIR']).expanduser().resolve()} (from $GEODREAM_MODELS_DIR)"
    root = comfyui_root()
    if root is not None:
        via = next(p for p in pack_paths() if p.parent.parent == root)
        linked = f", reached through the link {via} (the pack itself is {PACK_ROOT})" if via != PACK_ROOT else ""
        return (f"models folder {root / 'models'} (the ComfyUI install the pack is in{linked}; "
                "plus its extra_model_paths.yaml)")
    return (f"models folder {Path('models').resolve()} (./models: the pack at {PACK_ROOT} is not inside a ComfyUI "
            "install by any path it was reached by; run this from ComfyUI/custom_nodes/<pack>, or pass --models-dir "
            "ComfyUI/models or set $GEODREAM_MODELS_DIR)")


def _extra_paths(config_file: Path) -> list[tuple[str, Path, bool]]:
    """(folder kind, path, is_default) for every path in an extra_model_paths.yaml."""
    import yaml

    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise GeoDreamError(f"GeoDream: cannot read {config_file}: {err}. Fix the file or pass --models-dir.") from None
    found = []
    for section in config.values():
        if not isinstance(section, dict):
            continue
        section = dict(section)
        base = section.pop("base_path", None)
        if base:
            base = Path(os.path.expandvars(os.path.expanduser(base)))
            base = base if base.is_absolute() else config_file.parent / base
        is_default = bool(section.pop("is_default", False))
        for kind, lines in section.items():
            for line in str(lines).split("\n"):
                if line.strip():
                    path = Path(line.strip())
                    path = base / path if base else (path if path.is_absolute() else config_file.parent / path)
                    found.append((kind, Path(os.path.normpath(path)), is_default))
    return found


def search_folders(kind: str, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every folder searched for models of ``kind`` ("geodream", "diffusers", "checkpoints", "clip", "rembg"), the
    first being where downloads go. ``models_dir`` (the command's --models-dir) beats $GEODREAM_MODELS_DIR."""
    models_dir = models_dir or os.environ.get("GEODREAM_MODELS_DIR")
    if models_dir:
        return [Path(models_dir).expanduser().resolve() / kind]
    root = comfyui_root()
    if root is None:
        return [Path("models").resolve() / kind]
    names = {kind, LEGACY_NAMES.get(kind, kind)}
    folders = [root / "models" / kind]
    config = root / "extra_model_paths.yaml"
    if config.is_file():
        for name, path, is_default in _extra_paths(config):
            if LEGACY_NAMES.get(name, name) in names and path not in folders:
                folders.insert(0, path) if is_default else folders.append(path)
    return folders
