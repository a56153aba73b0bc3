"""Run folders are owned (STYLE 23): a folder records what made it, and another run never writes
into it without an explicit ``--force`` — which then really starts over.

A run's ``config.json`` holds its resolved config plus ``kind`` (``train-cls``, ``train-det``,
``eval-det``, ``svm-protocol``, ...), ``config_hash`` and ``sppnet_version``. Folders written
before ``kind`` existed are recognised by their fields.

Two mechanisms, used by every command that writes into a folder:

- :class:`RunLock`: an exclusive ``flock`` on ``FOLDER/.lock`` held for the run's lifetime, the
  holder's pid, host and command written in it. A second run into the folder is refused at once,
  naming the holder. The kernel releases a ``flock`` when its process dies, so a lock file left
  by a killed run is lockable again: it is taken over, with a warning naming the dead holder.
- :func:`claim_folder`: the ownership rule — another kind of run's folder is refused; a folder
  of the same kind whose outputs came from other settings is refused unless ``--force`` (which
  deletes those outputs); the same settings again recompute the same outputs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .config import META_KEYS, config_diff

__all__ = ["RunFolderError", "check_output_dir", "run_kind", "config_hash", "write_run_config",
           "refuse_other_kind", "remove_outputs", "atomic_write_text", "describe_diff",
           "RunLock", "LOCK_NAME", "lock_holder", "lock_for_job", "claim_folder", "claim_outputs",
           "check_cache_dir",
           "is_user_os_error", "command_settings", "check_output_file"]

log = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """An output folder that cannot take this run (a file, or another run's folder)."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename, so
    a crash never leaves a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def check_output_dir(out: str | Path, flag: str = "--output-dir") -> Path:
    """``out`` as a Path; raises when it exists and is not a folder, when it (or, if it does not
    exist yet, the folder it would be made in) cannot be written, or when a part of its name is
    too long for the file system. Nothing is created."""
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > 255:
            raise RunFolderError(f"{flag} {out}: the name {part[:40]}... is "
                                 f"{len(os.fsencode(part))} bytes long; file names are at most "
                                 "255")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{flag} {out} exists and is not a folder")
    here = out
    if not out.exists():
        for parent in out.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise RunFolderError(f"{flag} {out}: {parent} is a file, not a folder")
                here = parent
                break
    if here.exists() and not os.access(here, os.W_OK | os.X_OK):
        what = "" if here == out else f" (it would be made in {here})"
        raise RunFolderError(f"{flag} {out} is not writable{what}: {_why_not_writable(here)}")
    return out


def _why_not_writable(folder: Path) -> str:
    """The reason ``folder`` cannot be written: a read-only file system or the permissions."""
    try:
        st = os.statvfs(folder)
        if st.f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        pass
    return "permission denied"


def run_kind(out: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """``(kind, config)`` of the run recorded in ``out/config.json``, ``(None, None)`` if none."""
    p = Path(out) / "config.json"
    if not p.is_file():
        if (Path(out) / "detector.safetensors").is_file():  # a detector (train-det's model/)
            return "detector", None
        return None, None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return "unreadable", None
    if not isinstance(data, dict):
        return "unreadable", None
    kind = data.get("kind")
    if kind is None:  # written before runs recorded their kind
        if "config_hash" in data or "svm_layers" in data:
            kind = "train-det"
        elif "sizes" in data and "epochs" in data:
            kind = "train-cls"
        else:
            kind = "unknown"
    return kind, data


def refuse_other_kind(out: Path, kind: str) -> dict[str, Any] | None:
    """The config of the ``kind`` run in ``out`` (or None); raises if another kind owns it."""
    found, data = run_kind(out)
    if found is not None and found != kind:
        what = ("a detector (its detector.safetensors)" if found == "detector" else
                f"a {found} run (its config.json)")
        raise RunFolderError(f"{out} holds {what}, not a {kind} run; use another folder")
    return data


def config_hash(cfg_json: dict[str, Any], ignore: Sequence[str] = ()) -> str:
    keys = {k: v for k, v in cfg_json.items() if k not in set(ignore) | set(META_KEYS)}
    return hashlib.sha1(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:12]


def write_run_config(out: Path, kind: str, cfg_json: dict[str, Any],
                     ignore: Sequence[str] = ()) -> Path:
    """``out/config.json``: the resolved config with ``kind``, ``config_hash`` and the version."""
    from .. import __version__

    out.mkdir(parents=True, exist_ok=True)
    doc = {"kind": kind, "config_hash": config_hash(cfg_json, ignore),
           "sppnet_version": __version__, **cfg_json}
    return atomic_write_text(out / "config.json", json.dumps(doc, indent=2) + "\n")


def describe_diff(old: dict[str, Any] | None, new: dict[str, Any],
                  ignore: Sequence[str] = ()) -> str:
    diff = config_diff(old or {}, new, ignore)
    if not diff:
        return "the same configuration"
    more = f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""
    return "a different configuration: " + "; ".join(diff[:4]) + more


def remove_outputs(out: Path, names: Iterable[str]) -> list[str]:
    """Delete the named files / folders (glob patterns) under ``out``; returns what went."""
    gone = []
    for pattern in names:
        for p in sorted(out.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            gone.append(p.name)
    return gone


# -- the run-folder lock ---------------------------------------------------------------------

LOCK_NAME = ".lock"
# folders this process holds (resolved path -> [RunLock, depth]): a run that calls another
# stage on its own folder (the demo, tests) re-enters instead of refusing itself
_HELD: dict[str, list] = {}


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process (it wrote no details)"
    since = info.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(
        since, (int, float)) else "?"
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('kind') or 'a run'}: "
            f"{info.get('command')!r}, since {when})")


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text() or "null")
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunLock:
    """An exclusive lock on a run folder for the run's lifetime (``with RunLock(out, kind):``).

    ``fcntl.flock`` on ``out/.lock`` (created, with ``out``, when missing), the holder's pid,
    host, kind, command and start time written in it. A second run is refused at once with a
    :class:`RunFolderError` naming the holder. A lock file whose ``flock`` is free was left by a
    process that died (the kernel drops a dead process's locks): it is taken over, with a
    warning naming that holder. On release the file is removed. Re-entrant within a process.
    """

    def __init__(self, folder: str | Path, kind: str = "") -> None:
        self.folder = Path(folder)
        self.kind = kind
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self.created_folder = False
        self.took_over: dict[str, Any] | None = None  # the dead holder's details, if any

    def acquire(self) -> RunLock:
        import fcntl

        key = str(self.folder.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            self._fd = -1  # re-entered: the outer holder releases
            return self
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            self.created_folder = True
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _holder_text(_read_holder(self.path))
                raise RunFolderError(f"{self.folder} is in use by another run: {holder}; wait "
                                     "for it to end, or use another --output-dir") from None
            # the file may have been removed (its holder released it) between open and flock:
            # then this lock guards nothing; try again on the new file
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:  # pragma: no cover - ten releases racing ten acquisitions
            raise RunFolderError(f"{self.folder}: could not take its lock")
        old = _read_holder(self.path)
        if old:
            self.took_over = old
            log.warning("%s: taking over the lock left by %s, which is no longer running",
                        self.folder, _holder_text(old))
        info = {"pid": os.getpid(), "host": socket.gethostname(), "kind": self.kind,
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        _HELD[key] = [self, 1]
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = str(self.folder.resolve())
        if self._fd == -1:
            _HELD[key][1] -= 1
            self._fd = None
            return
        _HELD.pop(key, None)
        try:
            self.path.unlink()  # while still held: nobody can lock this file after us
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def abandon(self) -> None:
        """Release, and remove the folder again if this lock created it and it is empty (a
        run refused before writing anything leaves nothing behind)."""
        created = self.created_folder and self._fd not in (None, -1)
        self.release()
        if created:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_for_job(folder: str | Path, kind: str, info: Any = None) -> RunLock | None:
    """The run folder's lock, held by the main process of a job (``info``: its
    :class:`~sppnet.utils.distributed.DistInfo`; ``None``: one process) for the run's lifetime.
    Every process learns whether it was taken, so all of them stop together, with the same
    error, when another run holds the folder."""
    from .distributed import DistInfo, all_reduce_sum

    info = info or DistInfo()
    lock, err = None, None
    if info.is_main:
        try:
            lock = RunLock(folder, kind).acquire()
        except RunFolderError as e:
            err = e
    if all_reduce_sum([1.0 if err else 0.0], info)[0]:
        raise err if err is not None else RunFolderError(f"{folder} is in use by another run")
    return lock


def lock_holder(folder: str | Path) -> dict[str, Any] | None:
    """The details of the process holding ``folder``'s lock, or ``None`` when nobody holds it
    (this process's own locks count as not held)."""
    import fcntl

    folder = Path(folder)
    path = folder / LOCK_NAME
    if not path.is_file() or str(folder.resolve()) in _HELD:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_holder(path) or {}
    finally:
        os.close(fd)
    return None


# -- ownership of folders written by commands other than training -----------------------------


def claim_outputs(out: Path, kind: str, settings: dict[str, Any], outputs: Sequence[str],
                  force: bool = False, ignore: Sequence[str] = (), reuse_same: bool = True,
                  flag: str = "--output-dir",
                  advice: str = "use another folder, or --force to replace them",
                  remove: bool = True,
                  normalise: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  own: bool = False) -> dict[str, Any] | None:
    """The one ownership rule of a run folder, for every command and trainer: another kind of
    run's folder is refused; ``outputs`` (glob patterns) present from other ``settings`` (or,
    with ``reuse_same=False``, from any run) are refused — the message names what differs and
    ``advice`` — unless ``force``, which deletes them (where ``remove``: the process that owns
    the folder) when a recorded run of ``kind`` wrote them (never files no config records).
    ``normalise``: the earlier run's recorded config in this version's layout (a config of an
    earlier layout compares by content). ``own``: the folder is part of a run that already
    holds it (train-det's ``eval/``, written by older versions without a config): its files
    are replaced without one. Returns that record (or ``None``)."""
    old = refuse_other_kind(out, kind)
    present = [p.name for pattern in outputs for p in sorted(out.glob(pattern))]
    if not present:
        return old
    new = json.loads(json.dumps(settings))
    before = (normalise(old) if normalise is not None else old) if old is not None else None
    same = reuse_same and before is not None and config_hash(before, ignore) == config_hash(
        new, ignore)
    if force and old is None and not own:  # nothing says a sppnet run wrote them
        raise RunFolderError(f"{flag} {out} already holds {', '.join(present[:3])}, outputs "
                             f"no sppnet command recorded (no config.json of a {kind} run); "
                             "--force only replaces a recorded run's outputs: use another "
                             "folder")
    if force:
        if remove:
            gone = remove_outputs(out, outputs)
            log.warning("--force: removed %s from %s (its run is started over)",
                        ", ".join(gone), out)
    elif not same:
        what = (describe_diff(before, new, ignore) if before is not None else
                "outputs no sppnet command recorded (no config.json)")
        raise RunFolderError(f"{flag} {out} already holds {', '.join(present[:3])} (a {kind} "
                             f"run) with {what}; {advice}")
    return old


def claim_folder(out: str | Path, kind: str, settings: dict[str, Any], outputs: Sequence[str],
                 force: bool = False, flag: str = "--output-dir",
                 ignore: Sequence[str] = (), own: bool = False) -> RunLock:
    """Claim ``out`` for a ``kind`` command whose outputs are a function of ``settings``
    (evaluations, detections, the SVM protocol, the demo): lock it, apply the ownership rule
    (:func:`claim_outputs`: the same settings again are allowed, they recompute the same
    outputs; others need ``force``, which deletes them), and record ``settings`` in
    ``out/config.json``. Returns the held :class:`RunLock` (release it when the command
    ends)."""
    out = check_output_dir(out, flag)
    lock = RunLock(out, kind).acquire()
    try:
        claim_outputs(out, kind, settings, outputs, force, ignore, flag=flag, own=own)
        write_run_config(out, kind, json.loads(json.dumps(settings)), ignore)
    except BaseException:
        lock.abandon()
        raise
    return lock


# argparse attributes that do not change what a command computes
_NOT_SETTINGS = ("func", "command", "force", "no_progress", "device", "output_dir", "workers")


def command_settings(args: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
    """A command's arguments as the settings its outputs depend on (for :func:`claim_folder`):
    paths made absolute (the same files from another folder are the same settings), tuples as
    lists; ``drop`` and run-time switches left out."""
    out: dict[str, Any] = {}
    for k, v in sorted(vars(args).items()):
        if k in _NOT_SETTINGS or k in drop:
            continue
        if isinstance(v, Path) or (isinstance(v, str) and v and Path(v).exists()):
            v = str(Path(v).resolve())
        elif isinstance(v, (list, tuple)):
            v = [str(x.resolve()) if isinstance(x, Path) else x for x in v]
        out[k] = v
    return out


def check_output_file(path: str | Path, flag: str, replaceable: Sequence[str] = ()) -> Path:
    """A single file a command writes (``bench --json``, ``eval-cls --output``): refused when
    it is a folder, or when it would replace a file of a run's folder other than the command's
    own kind of file (``replaceable``: glob patterns, e.g. ``views_*.json``) — never a run's
    ``results.json``, config or checkpoints. Its folder must be writable."""
    import fnmatch

    path = Path(path)
    if path.is_dir():
        raise RunFolderError(f"{flag} {path} is a folder; give a file name")
    check_output_dir(path.parent, flag)
    owner, _ = run_kind(path.parent)
    if (owner is not None and path.exists()
            and not any(fnmatch.fnmatch(path.name, p) for p in replaceable)):
        raise RunFolderError(f"{flag} {path} would replace a file of the {owner} run in "
                             f"{path.parent}; write it elsewhere")
    return path


def check_cache_dir(cache: str | Path, flag: str = "--cache-dir",
                    output_dir: str | Path | None = None) -> Path:
    """A cache folder is shared by design (its entries are keyed by content), but never a run's
    folder: one that holds a run's ``config.json``, or the ``output_dir`` the command is about
    to claim as one, is refused."""
    cache = check_output_dir(cache, flag)
    if output_dir is not None and cache.resolve() == Path(output_dir).resolve():
        raise RunFolderError(f"{flag} {cache} is the --output-dir; a cache goes into a folder "
                             "of its own (e.g. OUTPUT_DIR/cache, the default)")
    kind, _ = run_kind(cache)
    if kind is not None:
        raise RunFolderError(f"{flag} {cache} holds a {kind} run (its config.json); a cache "
                             "goes into a folder of its own")
    return cache


def is_user_os_error(e: OSError) -> bool:
    """An ``OSError`` about one of the user's paths (a read-only or full disk, a name too long,
    no permission): reported as one line, not a traceback."""
    return e.filename is not None or e.errno in (
        errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOSPC,
        errno.EDQUOT, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.ENOENT, errno.EEXIST)
