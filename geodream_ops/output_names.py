"""Where a save node's ``filename_prefix`` puts its files: the rules of ComfyUI's own save nodes
(folder_paths.get_save_image_path), with a GeoDreamError naming the prefix and the rule where ComfyUI would write
somewhere the user did not mean or fail with a raw OS error.

ComfyUI, for each kind of prefix, and what the pack does:

- ``GeoDream/mesh``: ``<output>/GeoDream/mesh_00001_.glb``; the same.
- ``%year%-%month%-%day%/mesh`` (also %hour%, %minute%, %second%): today's date substituted; the same.
- ``../x`` or an absolute path outside the output folder: refused ("Saving image outside the output folder is not
  allowed"); refused the same way, before the graph runs.
- ``""`` or ``"."``: a hidden ``._00001_.png`` in the output folder; refused (the prefix names no file).
- ``GeoDream/`` (ending in a separator): ``GeoDream_00001_.png`` *beside* the folder it names; refused (add the
  file's name after the folder).
- a NUL character: a raw ``ValueError: embedded null byte``; refused.
- ``<>:"|?*`` or a control character: written on Linux and macOS, an ``OSError`` on Windows; refused everywhere, so
  a workflow saves the same files on every system (``/`` and ``\\`` stay folder separators).
- a name longer than the file system allows: a raw ``OSError: File name too long``; refused, with the length
  allowed (the counter, the extension and the writer's temporary name take their share)."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .atomic import TEMP_OVERHEAD
from .errors import GeoDreamError

NAME_MAX = 255  # bytes per name on ext4, XFS, APFS, NTFS (UTF-16 units there)
COUNTER = len("_00001_")
DATE_FIELDS = ("year", "month", "day", "hour", "minute", "second")
# What Windows refuses in a file or folder name (Win32 "Naming Files, Paths, and Namespaces"): these and the
# control characters 1-31.
WINDOWS_FORBIDDEN = '<>:"|?*'


class PrefixError(GeoDreamError, ValueError):
    """A filename_prefix that cannot name files under the output folder."""


def _with_date(prefix: str) -> str:
    now = time.localtime()
    values = (now.tm_year, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)
    for name, value in zip(DATE_FIELDS, values):
        prefix = prefix.replace(f"%{name}%", str(value) if name == "year" else str(value).zfill(2))
    return prefix


def problem(prefix, suffixes: tuple[str, ...] = (".glb",)) -> str | None:
    """Why ``prefix`` cannot name files under the output folder (one sentence naming it and the rule), or None.
    ``suffixes``: the extensions the node writes (the longest limits the name's length)."""
    if not isinstance(prefix, str):
        return f"filename_prefix must be text, got {type(prefix).__name__} {prefix!r}"
    shown = repr(prefix)
    if "\0" in prefix:
        return f"filename_prefix {shown} contains a NUL character, which no file system allows in a name"
    forbidden = list(dict.fromkeys(c for c in prefix if c in WINDOWS_FORBIDDEN or ord(c) < 32))
    if forbidden:
        # ComfyUI's editor fills in %date:yyyy-MM-dd% before it queues a prompt; outside it the text stays as it is.
        hint = " (%date:...% is filled in by ComfyUI's editor only; here use %year%-%month%-%day%)" \
            if "%date:" in prefix else ""
        return (f"filename_prefix {shown} has {', '.join(map(repr, forbidden))}: characters Windows does not allow "
                f"in a file or folder name (nor control characters), so the workflow would not save there; remove "
                f"them{hint}")
    prefix = _with_date(prefix)
    if prefix.endswith(("/", "\\")):
        return (f"filename_prefix {shown} ends with a folder separator, so it names no file (ComfyUI would write "
                f"'{prefix.rstrip('/').rstrip(chr(92))}_00001_' beside that folder): add a name after it, e.g. "
                f"'{prefix}mesh'")
    normal = os.path.normpath(prefix.replace("\\", "/")) if prefix else "."
    if normal in (".", "") or os.path.basename(normal) in (".", ".."):
        return (f"filename_prefix {shown} names no file: give a path under the output folder such as "
                "'GeoDream/mesh'")
    if os.path.isabs(normal) or normal == ".." or normal.startswith("../"):
        return (f"filename_prefix {shown} points outside the output folder; saving outside it is not allowed (as "
                "in ComfyUI's own save nodes): give a path under it such as 'GeoDream/mesh'")
    parts = normal.split("/")
    room = NAME_MAX - COUNTER - max(len(s.encode()) for s in suffixes) - TEMP_OVERHEAD
    for part in parts[:-1]:
        if len(part.encode()) > NAME_MAX:
            return (f"filename_prefix {shown} has a folder name of {len(part.encode())} bytes; file systems allow "
                    f"{NAME_MAX}: shorten it")
    if len(parts[-1].encode()) > room:
        return (f"filename_prefix {shown} ends in a name of {len(parts[-1].encode())} bytes; with the counter, the "
                f"extension and the temporary name used while writing, file systems allow {room}: shorten it")
    return None


def resolve(prefix: str, output_dir: Path, suffixes: tuple[str, ...]) -> tuple[Path, str]:
    """(folder, file stem) of ``prefix`` under ``output_dir``, or a GeoDreamError from ``problem``."""
    reason = problem(prefix, suffixes)
    if reason:
        raise PrefixError(f"GeoDream: {reason}.")
    normal = os.path.normpath(_with_date(prefix).replace("\\", "/"))
    # As ComfyUI: the path as written (abspath, links not followed), so a linked subfolder may lead to another disk.
    target = Path(os.path.abspath(Path(output_dir) / normal))
    return target.parent, target.name
