"""Files appear whole or not at all, under names no other writer gets, and a failed write says which file and why.

- Every writer writes a temporary file of its own (``.partial-<host>-<pid>-<random>-<name>``: two processes never
  share one) and moves it under its final name only once complete, so a crash, a kill or a full disk never leaves a
  half-written file under a final name, and the previous file stays whole until the new one replaces it.
- A new numbered output (``<stem>_00001_.glb``) is claimed exclusively: the finished temporary is hard-linked to the
  final name, which fails if another writer took that name first; then the next counter is tried. Two ComfyUI
  processes or two batch workers saving with one prefix at the same moment each get their own file.
- Temporaries left by a killed process are removed (``remove_stale``) when a stage's run starts or is pruned and
  whenever a file is saved into the folder.
- OSError (a full disk, a name too long, no permission) and the libraries' wrappings of it (torch's
  ``inline_container.cc ... unexpected pos``, safetensors' ``(os error 28)``) become one GeoDreamError naming the
  file, the cause and what to do.

A checkpoint of another layout is refused by name rather than half-loaded (CheckpointMismatch)."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from .errors import GeoDreamError

TEMP_PREFIX = ".partial-"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
# <prefix><host>-<pid>-<random>-<final name>; older versions wrote ".partial-<final name>".
_TEMP = re.compile(rf"^{re.escape(TEMP_PREFIX)}(?:([0-9a-f]{{6}})-(\d+)-[0-9a-f]{{8}}-)?(.+)$")
# Longest temporary prefix: ".partial-" + host + "-" + a 10-digit pid + "-" + 8 hex + "-".
TEMP_OVERHEAD = len(TEMP_PREFIX) + 6 + 1 + 10 + 1 + 8 + 1
# A temporary whose writer cannot be checked (another machine on shared storage, an old version) is stale after this.
STALE_AFTER_S = 6 * 3600
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
_MB = 1e6


class CheckpointMismatch(GeoDreamError, RuntimeError):
    def __init__(self, path):
        super().__init__(f"GeoDream: {path} was written by another version of the pack and cannot be resumed; "
                         "delete it, or queue again with resume off to start over.")


class WriteFailed(GeoDreamError, OSError):
    """A file could not be written; the message names it, the cause and the way out."""


def temporary_name(path: Path) -> Path:
    """This writer's own temporary beside ``path`` (same suffix, so writers that go by extension still work)."""
    path = Path(path)
    return path.with_name(f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")


def _os_errno(err: BaseException) -> int | None:
    """The errno behind ``err``: its own, one in its cause/context chain, or the "(os error N)" of a Rust library."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        match = re.search(r"\(os error (\d+)\)", str(seen))
        if match:
            return int(match.group(1))
        seen = seen.__cause__ or seen.__context__
    return None


def existing_folder(folder: Path) -> Path:
    """``folder`` (resolved) or, where it does not exist yet, its nearest existing parent: the disk it is on."""
    folder = Path(folder).resolve()
    while not folder.exists():
        folder = folder.parent
    return folder


def free_bytes(folder: Path) -> int | None:
    """Free bytes of the disk ``folder`` is (or will be) on; None where the system cannot say."""
    try:
        return shutil.disk_usage(existing_folder(folder)).free
    except OSError:
        return None


def _room_text(folder: Path, needed: int | None) -> str:
    free = free_bytes(folder)
    text = f"{free / _MB:.0f} MB are free there" if free is not None else "the free space is unknown"
    if needed:
        text += (f"; this file needs about {needed / _MB:.0f} MB, written beside the previous copy, which stays "
                 "until the new one is whole (an atomic replace needs room for both at once)")
    return text


def failure(path: Path, err: BaseException, needed: int | None = None) -> WriteFailed | None:
    """The GeoDreamError for a failed write of ``path``, or None when ``err`` is not about the file system."""
    code = _os_errno(err)
    folder = Path(path).parent
    if code is None and "inline_container" in str(err):  # torch's zip writer hides the errno it got
        free = free_bytes(folder)
        code = errno.ENOSPC if free is not None and free < max(needed or 0, 64 * _MB) else errno.EIO
    if code is None:
        return None
    if code in DISK_FULL:
        return WriteFailed(f"GeoDream: could not write '{path}': the disk is full ({_room_text(folder, needed)}). "
                           "Free some space (old runs in output/GeoDream/, other outputs) or point the output folder "
                           "at a larger disk (ComfyUI's --output-directory, or $GEODREAM_OUTPUT_DIR headless), then "
                           "queue again; earlier files are untouched.")
    if code == errno.ENAMETOOLONG:
        return WriteFailed(f"GeoDream: could not write '{path}': the name is too long for the file system; "
                           "use a shorter filename_prefix.")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteFailed(f"GeoDream: could not write '{path}': {os.strerror(code)}. Make {folder} writable or "
                           "choose another output folder.")
    return WriteFailed(f"GeoDream: could not write '{path}': {os.strerror(code)} ({err}).")


def require_room(path: Path, needed: int) -> None:
    """Refuse, before anything is written, a file of ``needed`` bytes that cannot fit beside ``path``'s folder's
    other files (GeoDreamError saying how much is needed and free)."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed:
        raise WriteFailed(f"GeoDream: not enough room to write '{path}': {_room_text(Path(path).parent, needed)}. "
                          "Free some space or point the output folder at a larger disk, then queue again; earlier "
                          "files are untouched.")


def make_folder(folder: Path) -> None:
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise failure(Path(folder) / "(folder)", err) or err from None


@contextmanager
def atomic_write(path, needed: int | None = None):
    """Yield this writer's temporary path beside ``path``; it replaces ``path`` only if the block finishes. With
    ``needed`` (bytes) the write is refused up front when the disk has less room. File-system failures are raised
    as WriteFailed naming ``path``; the temporary never stays behind."""
    path = Path(path)
    make_folder(path.parent)
    if needed:
        require_room(path, needed)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except GeoDreamError:
        raise
    except Exception as err:
        wrapped = failure(path, err, needed)
        if wrapped is None:
            raise
        raise wrapped from None
    finally:
        _discard(tmp)


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _publish_new(tmp: Path, final: Path) -> None:
    """Move the complete ``tmp`` to ``final`` only if no file has that name (FileExistsError otherwise)."""
    try:
        os.link(tmp, final)  # atomic and exclusive: the name appears with its whole content or not at all
        return
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EACCES,
                             errno.EMLINK):
            raise
    # File systems without hard links (FAT, some network shares): claim the name empty, then replace it.
    os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    os.replace(tmp, final)


def next_counter(folder: Path, stem: str) -> int:
    """One past the highest ``<stem>_<n>_...`` in ``folder`` (1 when none), as ComfyUI's get_save_image_path counts."""
    pattern = re.compile(rf"^{re.escape(stem)}_(\d+)_")
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 1
    return max((int(m.group(1)) for name in names if (m := pattern.match(name))), default=0) + 1


def write_new(folder: Path, stem: str, suffixes: tuple[str, ...],
              write: Callable[[dict[str, Path], dict[str, Path]], None], needed: int | None = None) -> dict[str, Path]:
    """Write a new numbered set of files ``<folder>/<stem>_<counter>_<suffix>`` (the first suffix the main file,
    e.g. ``(".obj", ".mtl", ".png")``), claimed exclusively: ``write(finals, temps)`` fills ``temps`` (it may name
    ``finals`` inside the files, as an OBJ names its .mtl); the others are published first and the main file last,
    so a present main file always has its companions. On a name another writer took first, the files published so
    far by this call are withdrawn and the next counter is tried. Returns {suffix: final path}."""
    folder = Path(folder)
    make_folder(folder)
    remove_stale(folder)
    counter = next_counter(folder, stem)
    while True:
        finals = {s: folder / f"{stem}_{counter:05d}_{s}" for s in suffixes}
        temps = {s: temporary_name(p) for s, p in finals.items()}
        published = []
        try:
            if needed:
                require_room(finals[suffixes[0]], needed)
            write(finals, temps)
            for suffix in (*suffixes[1:], suffixes[0]):
                _publish_new(temps[suffix], finals[suffix])
                published.append(finals[suffix])
            return finals
        except FileExistsError:
            for path in published:  # ours: just created by this call
                _discard(path)
            counter = max(counter + 1, next_counter(folder, stem))
        except GeoDreamError:
            raise
        except Exception as err:
            for path in published:
                _discard(path)
            wrapped = failure(finals[suffixes[0]], err, needed)
            if wrapped is None:
                raise
            raise wrapped from None
        finally:
            for tmp in temps.values():
                _discard(tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def is_stale(path: Path, now: float | None = None) -> bool:
    """A temporary of ours whose writer is gone: a process of this machine that no longer runs, or (another
    machine's, an older version's, or any on Windows) one untouched for STALE_AFTER_S."""
    match = _TEMP.match(Path(path).name)
    if match is None:
        return False
    host, pid = match.group(1), match.group(2)
    # os.kill(pid, 0) would send CTRL_C_EVENT on Windows: there a temporary's age decides.
    if host == _HOST and pid is not None and int(pid) != os.getpid() and os.name != "nt":
        return not _alive(int(pid))
    try:
        age = (now or time.time()) - Path(path).stat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S and not (host == _HOST and pid is not None and int(pid) == os.getpid())


def remove_stale(folder: Path) -> list[Path]:
    """Delete the stale temporaries (is_stale) in ``folder``; returns those removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(TEMP_PREFIX) and entry.is_file() and is_stale(entry):
            _discard(entry)
            removed.append(entry)
    return removed
