"""Where the backend really listens: HOST/PORT, or gunicorn's own ``--bind`` when it was given one."""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from backend.settings import Settings

__all__ = ["gunicorn_binds", "loopback", "with_gunicorn_bind"]


def loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def gunicorn_binds(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """The ``--bind`` addresses of a gunicorn command line (and ``GUNICORN_CMD_ARGS``), in order."""
    if not argv or "gunicorn" not in Path(argv[0]).name:
        return []
    args = shlex.split(env.get("GUNICORN_CMD_ARGS", "")) + list(argv[1:])
    binds = []
    for i, a in enumerate(args):
        if a in ("-b", "--bind") and i + 1 < len(args):
            binds.append(args[i + 1])
        elif a.startswith("--bind="):
            binds.append(a.split("=", 1)[1])
        elif a.startswith("-b") and len(a) > 2:
            binds.append(a[2:])
    return binds


def with_gunicorn_bind(settings: Settings, argv: list[str], env: Mapping[str, str]) -> Settings:
    """The settings with HOST and PORT as gunicorn really binds them (its ``--bind`` wins over HOST/PORT).

    The start-up warnings (basic auth off on a public address) then name the address that is listening.
    """
    hosts = []
    for bind in gunicorn_binds(argv, env):
        if bind.startswith(("unix:", "fd://")):
            continue
        host, _, digits = bind.rpartition(":") if bind.rpartition(":")[2].isdigit() else (bind, "", "")
        hosts.append((host.strip("[]") or "0.0.0.0", int(digits) if digits else settings.port))
    if not hosts:
        return settings
    public = [h for h in hosts if not loopback(h[0])]
    host, port = (public or hosts)[0]
    return replace(settings, host=host, port=port)
