"""Named pretrained weights on the Hugging Face hub: which repository holds them, whether they are cached, whether
the hub answers.

Light on purpose (no torch, no timm): the command line checks a named model here before it imports them, so that
offline a model missing from the cache fails in well under a second rather than after seconds of imports.
``timm_hub_repos.json`` holds, for every pretrained timm ViT/DeiT name, the repository timm fetches its weights
from; ``scripts/update_timm_hub_repos.py`` writes it from the installed timm and ``tests/test_hub.py`` checks it
against timm.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

__all__ = [
    "FETCH_HINT",
    "WeightsUnavailable",
    "check_named_weights",
    "hub_host",
    "hub_offline",
    "hub_reachable",
    "in_hub_cache",
    "is_pretrained_name",
    "known_hub_repo",
    "unavailable_message",
]

REPOS_FILE = Path(__file__).with_name("timm_hub_repos.json")
#: The weight files timm asks the hub for, in its order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
FETCH_HINT = (
    "Download them on a machine with network access (they land in ~/.cache/huggingface, or HF_HOME) and copy the "
    "cache here, or pass the weights file with --weights PATH (EXAMINE_WEIGHTS in the backend)"
)


class WeightsUnavailable(RuntimeError):
    """A named model's weights are not in the Hugging Face cache and cannot be downloaded; the message says what to do."""


def is_pretrained_name(model: str) -> bool:
    """True for names that carry pretrained weights: ``hf-hub:`` ids and timm names with a tag (``name.tag``)."""
    return model.startswith("hf-hub:") or "." in model


def unavailable_message(model: str, why: str) -> str:
    """The error for weights that are neither cached nor downloadable, naming the model, the reason and the way out."""
    return (
        f"the pretrained weights of {model!r} are not in the Hugging Face cache and could not be downloaded ({why}). "
        + FETCH_HINT
    )


@cache
def _shipped_repos() -> dict[str, str | None]:
    return json.loads(REPOS_FILE.read_text())["repos"]


def known_hub_repo(model: str) -> str | None:
    """The hub repository of a named model's weights, when it is known without timm.

    The id of an ``hf-hub:`` name, or the repository of a tagged timm ViT/DeiT name shipped in
    ``timm_hub_repos.json``. None for other names and for weights that timm fetches from elsewhere: timm decides.
    """
    if model.startswith("hf-hub:"):
        return model.removeprefix("hf-hub:")
    return _shipped_repos().get(model)


def in_hub_cache(repo: str) -> bool:
    """Whether the Hugging Face cache holds one of the weight files timm would load from ``repo``."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in WEIGHT_FILES)


def _offline_reason() -> str | None:
    """Why nothing can be downloaded now (huggingface_hub's offline mode, or a hub that does not answer); else None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    if not hub_reachable():
        return f"{hub_host()} cannot be reached"
    return None


def check_named_weights(model: str) -> None:
    """Fail at once if a named pretrained model's weights can be neither read from the cache nor downloaded.

    Returns when they are cached, when the hub can be reached, or when their repository is not known without timm
    (then timm's own loading decides). Raises :class:`WeightsUnavailable` otherwise.
    """
    if not is_pretrained_name(model):
        return
    repo = known_hub_repo(model)
    if repo is None or in_hub_cache(repo):
        return
    why = _offline_reason()
    if why is not None:
        raise WeightsUnavailable(unavailable_message(model, why))


def _hub_endpoint() -> tuple[str, int]:
    """The Hugging Face hub's host and port (``HF_ENDPOINT``, https://huggingface.co by default)."""
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_host() -> str:
    """The Hugging Face hub's host name."""
    return _hub_endpoint()[0]


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds (name lookup included).

    Checked before timm asks the hub for weights: offline, huggingface_hub retries for about a minute
    before it fails.
    """
    import socket
    from concurrent.futures import ThreadPoolExecutor

    host, port = _hub_endpoint()

    def connect() -> bool:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return True
        except OSError:
            return False

    pool = ThreadPoolExecutor(1)  # getaddrinfo has no timeout of its own
    try:
        return pool.submit(connect).result(timeout=timeout + 0.5)
    except TimeoutError:
        return False
    finally:
        pool.shutdown(wait=False)


@contextlib.contextmanager
def hub_offline(offline: bool) -> Iterator[None]:
    """huggingface_hub's offline mode while ``offline``: cached weights load, nothing is retried."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
