"""Where a command's wall time went: start-up, then each phase, as one console line and as a dict.

Start-up runs from the process's own start (Linux: ``/proc/self/stat``) to the first phase, so the
interpreter and the imports are counted too; the rest of the time between phases is "other".
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Phases", "process_age"]


def process_age() -> float:
    """Seconds since this process started (0.0 where the system does not say)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Phases:
    """Wall seconds per named phase (a phase entered twice adds up), in the order first entered."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self.startup = process_age()
        self.seconds: dict[str, float] = {}

    def end_startup(self) -> None:
        """Count everything until now as start-up (imports done after the arguments were read)."""
        now = time.perf_counter()
        self.startup = process_age() or self.startup + now - self._t0
        self._t0 = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as ``name``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def as_dict(self) -> dict[str, float]:
        """``start-up``, each phase, ``other`` and ``total`` in seconds."""
        inside = time.perf_counter() - self._t0
        out = {"start-up": self.startup, **self.seconds, "other": max(0.0, inside - sum(self.seconds.values()))}
        out["total"] = self.startup + inside
        return {k: round(v, 3) for k, v in out.items()}

    def line(self) -> str:
        """``phases: start-up 2.1 s · listing 0.0 s · … · total 9.8 s``."""
        return "phases: " + " · ".join(f"{k} {v:.1f} s" for k, v in self.as_dict().items())
