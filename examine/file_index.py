"""Which local files were hashed already: (path, size, mtime, ctime, inode) → sha256, as git's index does.

A re-run over a folder whose files did not change needs no read at all: a file whose path, size,
modification and change times (ns) and inode all match its entry has the sha256 recorded there, and
images are stored by that hash. Any change reads and hashes the file again (the change time catches an
in-place rewrite that restores the modification time, e.g. ``cp -p``). A file modified
within :data:`RACY_S` of being recorded is not trusted (its next change could keep the same
mtime, git's "racy" case), so the index can never make a stale embedding count.

The index lives beside the stores (``MODEL_DIR/store/files.tsv``), one line per file, rewritten
atomically after each run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["FileIndex", "RACY_S", "file_stamp"]

#: Files modified less than this many seconds before they were recorded are hashed again next time.
RACY_S = 2.0

Stamp = tuple[int, int, int, int]  # size, mtime_ns, ctime_ns, inode


def file_stamp(path: str | Path) -> Stamp | None:
    """(size, mtime_ns, ctime_ns, inode) of a regular file, None when it cannot be stat-ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


class FileIndex:
    """The sha256 of local files known unchanged since they were hashed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, tuple[Stamp, str]] = {}
        self._dirty = False
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []  # no index (or a damaged one): every file is hashed, as without it
        for line in lines:
            parts = line.split("\t")
            if len(parts) != 6 or len(parts[5]) != 64:
                continue
            try:
                stamp = (int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4]))
            except ValueError:
                continue
            self._entries[parts[0]] = (stamp, parts[5])

    def __len__(self) -> int:
        return len(self._entries)

    def known(self, paths: Sequence[str | Path]) -> list[str | None]:
        """The recorded sha256 of each path whose stamp still matches, else None."""
        out: list[str | None] = []
        for p in paths:
            entry = self._entries.get(str(Path(p).absolute()))
            out.append(entry[1] if entry is not None and file_stamp(p) == entry[0] else None)
        return out

    def record(self, items: Iterable[tuple[str | Path, Stamp | None, str]]) -> None:
        """Remember (path, stamp taken before the file was read, its sha256); racy or unknown stamps are skipped."""
        now_ns = time.time_ns()
        for p, stamp, key in items:
            name = str(Path(p).absolute())
            if stamp is None or now_ns - stamp[1] < RACY_S * 1e9 or "\t" in name or "\n" in name:
                self._entries.pop(name, None)
                continue
            self._entries[name] = (stamp, key)
        self._dirty = True

    def save(self) -> None:
        """Write the index atomically (a no-op when nothing was recorded)."""
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")  # two runs on one model directory: the last one wins
        with open(tmp, "w", encoding="utf-8") as fh:
            for name, ((size, mtime, ctime, ino), key) in sorted(self._entries.items()):
                fh.write(f"{name}\t{size}\t{mtime}\t{ctime}\t{ino}\t{key}\n")
        os.replace(tmp, self.path)
        self._dirty = False
