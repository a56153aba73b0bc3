"""Content digests and the verified cache-file format: what every cache (proposals, conv maps,
R-CNN window features, transfer features) is keyed by and checked with, and what a detector
records of the weight files it was built from — the bytes, never the path (a checkpoint
retrained in place keeps its path and changes its bytes).

Verified entries carry their own key and a checksum of their contents, are written atomically
(a temporary file in the same folder and a rename), and read back as ``None`` (with a warning
naming the file) when they are unreadable, fail their checksum (overwritten in place) or hold
another key (copied over another entry's name): a cache rebuilds such an entry.

- safetensors entries (one tensor): :func:`save_verified` / :func:`load_verified`;
- NumPy ``.npz`` entries (named arrays): :func:`write_npz_entry` / :func:`read_npz_entry`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["file_sha256", "file_digest", "array_digest", "arrays_digest", "tensor_digest",
           "module_digest", "save_verified", "load_verified", "write_npz_entry",
           "read_npz_entry"]

log = logging.getLogger(__name__)

# (resolved path, size, mtime_ns, inode) -> digest: a file is read once per process unless it
# changes (a rewrite changes its mtime or inode)
_MEMO: dict[tuple, str] = {}


def _safetensors_header(f) -> bytes | None:
    """A ``.safetensors`` file's JSON header, keys sorted (the library writes them in an
    arbitrary order: the same tensors saved twice differ in their first bytes), or ``None``
    when the file is not one."""
    head = f.read(8)
    if len(head) == 8:
        n = struct.unpack("<Q", head)[0]
        if 2 <= n <= 100_000_000:
            raw = f.read(n)
            if raw[:1] == b"{":
                try:
                    return json.dumps(json.loads(raw), sort_keys=True).encode()
                except ValueError:
                    pass
    f.seek(0)
    return None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's content (hex): its bytes, a ``.safetensors`` header with its keys
    in sorted order (so the same tensors and metadata give the same digest)."""
    path = Path(path)
    st = os.stat(path)
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            header = _safetensors_header(f)
            if header is not None:
                h.update(b"safetensors:" + header)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _MEMO[key] = h.hexdigest()
    return _MEMO[key]


def file_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """The hex digest of a file's raw bytes (``sha1``: the cache keys' image digests;
    ``sha256``: what ``sha256sum`` prints)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def array_digest(a: np.ndarray) -> str:
    """A checksum of an array's bytes in C order (BLAKE2b, 128 bits)."""
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).hexdigest()


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A checksum of named arrays: their names and bytes, in name order."""
    h = hashlib.blake2b(digest_size=16)
    for k in sorted(arrays):
        h.update(k.encode())
        h.update(np.ascontiguousarray(arrays[k]).tobytes())
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """A checksum of a tensor's bytes (BLAKE2b, 128 bits; ~1 ms per MB)."""
    import torch

    data = t.detach().cpu().contiguous().view(torch.uint8).numpy()
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def module_digest(module: torch.nn.Module) -> str:
    """A checksum of every tensor of a module's state (names included): a trunk trained end to
    end is its spec's plus this."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


def save_verified(path: Path, tensor: torch.Tensor, metadata: dict[str, str] | None = None
                  ) -> None:
    """Write ``tensor`` atomically to a safetensors file with a checksum of its bytes (and
    ``metadata``, e.g. the entry's ``key``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensor = tensor.contiguous()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
    save_file({"t": tensor}, str(tmp), metadata={**(metadata or {}),
                                                 "digest": tensor_digest(tensor)})
    os.replace(tmp, path)


def load_verified(path: Path, dtype: torch.dtype, dim: int, what: str,
                  key: str | None = None) -> torch.Tensor | None:
    """The tensor :func:`save_verified` wrote, or ``None`` (with a warning naming the file)
    when it is missing, unreadable, of another dtype or rank, no longer matches its checksum
    (overwritten in place), or stores another ``key`` than the one asked for (an entry copied
    over another's name)."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            stored = meta.get("digest")
            t = f.get_tensor("t")
        if key is not None and meta.get("key") != key:
            raise ValueError(f"it stores the key {meta.get('key')!r}, not {key!r} (an entry "
                             "copied over another's name)")
        if t.dim() != dim or t.dtype != dtype:
            raise ValueError(f"it has shape {tuple(t.shape)} and dtype {t.dtype}")
        if stored != tensor_digest(t):
            raise ValueError("its checksum does not match its contents")
        return t
    except (OSError, ValueError, KeyError, SafetensorError, RuntimeError) as e:
        log.warning("%s cache entry %s is corrupt (%s); recomputing", what, path, e)
        return None


def write_npz_entry(path: Path, arrays: Mapping[str, np.ndarray], key: str, digest: str) -> None:
    """Write ``arrays`` with the entry's ``key`` and ``digest`` (a checksum of the arrays, as
    the reader's ``digest_of`` computes it) atomically to the ``.npz`` file ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")  # unique per process
    np.savez(tmp, **arrays, key=np.array(key), digest=np.array(digest))
    os.replace(tmp, path)


def read_npz_entry(path: Path, key: str, digest_of: Callable[[dict[str, Any]], str]
                   ) -> dict[str, np.ndarray]:
    """The arrays :func:`write_npz_entry` wrote to ``path`` (without ``key`` and ``digest``).
    Raises ``ValueError`` (or the reading error) saying why the entry is not usable: it stores
    another key, has no checksum, or its arrays no longer match it (``digest_of(arrays)``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"it is not a readable .npz archive ({e})") from None
    stored_key, stored = str(out.pop("key", "")), out.pop("digest", None)
    if stored_key != key:
        raise ValueError(f"it stores the key {stored_key!r}, not {key!r}")
    if stored is None or str(stored) != digest_of(out):
        raise ValueError("its checksum does not match its contents")
    return out
