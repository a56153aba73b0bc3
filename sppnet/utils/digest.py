"""Content digests of files: what caches are keyed by and what a detector records of the weight
files it was built from — the bytes, never the path (a checkpoint retrained in place keeps its
path and changes its bytes)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

__all__ = ["file_sha256"]

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
