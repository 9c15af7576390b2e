"""What the status page may show of an internal message: one line, no server paths, no query strings.

Task errors and problems carry what an admin needs (the task, the image reference, the cause) but may also
carry the backend's own folders (MODEL_DIR, the data roots), the query strings of image references (signed
URLs sign them) and whole error pages. Each is shown here by name, without its query, cut to a line.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["public_text", "MAX_CHARS"]

#: The longest message shown (the rest is in the backend's log).
MAX_CHARS = 300
_QUERY = re.compile(r"\?[^\s'\"()<>]*")


def public_text(text: str, folders: dict[str, Path]) -> str:
    """``text`` fit for the status page: each folder of ``folders`` (name → path) replaced by its name, query
    strings replaced by ``?…``, the first line only, at most :data:`MAX_CHARS` characters."""
    out = str(text)
    for name, folder in sorted(folders.items(), key=lambda kv: -len(str(kv[1]))):
        for form in {str(folder).rstrip("/"), str(Path(folder).resolve()).rstrip("/")}:
            if form not in ("", "."):
                # a whole path only: /data/model, not Label Studio's /data/upload/… when MODEL_DIR is /data
                out = re.sub(rf"(?<![\w/.-]){re.escape(form)}(?=/|\b|$)(?!/upload|/local-files)", name, out)
    out = _QUERY.sub("?…", out)
    line = out.strip().splitlines()[0] if out.strip() else ""
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 1] + "…"
