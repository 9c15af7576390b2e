"""Task images: from a shared folder or over HTTP, bounded in time and memory.

Downloads have a short connect timeout and an overall deadline (all redirects and
bytes), go only to Label Studio or ``ALLOWED_HOSTS``, and are capped in size. Before
any decoding, the header is read and the decoded size (pixels × bytes per pixel as
Pillow stores them) is checked against ``EXAMINE_MAX_DECODE_MB``. They run only on
the background worker, never on a request thread. Errors name the task, the host
and the reason, never a signed query string.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from backend.labelstudio import LabelStudio
from backend.payload import display_uri
from backend.settings import Settings
from examine.embed import Source
from examine.images import ImageLoadError

__all__ = ["ImageFetcher", "decoded_bytes"]

# Bytes per pixel in Pillow's memory (1-bit images take a byte per pixel; RGB is padded to 4).
_PILLOW_BPP = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def decoded_bytes(data: bytes) -> tuple[int, str] | None:
    """(bytes the decoded image will take, a description) from the header alone; None if Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                w, h, mode = im.size[0], im.size[1], im.mode
    except Image.DecompressionBombError as exc:
        return 2**62, str(exc)[:80]
    except Exception:  # not a Pillow format (DICOM, some TIFFs) or a broken header: the decoder reports it
        return None
    return w * h * _PILLOW_BPP.get(mode, 4), f"{w} × {h} {mode}"


class ImageFetcher:
    """Reads one project's task images for the embedder."""

    def __init__(self, settings: Settings, client: LabelStudio | None):
        self.settings = settings
        self.client = client

    def source(self, tid: int, uri: str) -> Source:
        """An ``examine.embed`` source: the item name shows no query string."""
        return (f"task {tid} ({display_uri(uri)})", lambda: self.fetch(tid, uri))

    def fetch(self, tid: int, uri: str) -> bytes:
        """The image bytes, checked against the decode budget; ImageLoadError/LabelStudioError otherwise."""
        local = self.local_path(uri)
        if local is not None:
            data = local.read_bytes()
        elif self.client is None:
            raise ImageLoadError(f"task {tid}", "no Label Studio connection to download the image from yet")
        else:
            data = self.client.download(uri, task_id=tid)
        budget = self.settings.max_decode_mb * 2**20
        size = decoded_bytes(data)
        if size is not None and size[0] > budget:
            raise ImageLoadError(
                f"task {tid}",
                f"the image would take {size[0] / 2**20:.0f} MB decoded ({size[1]}), over "
                f"EXAMINE_MAX_DECODE_MB={self.settings.max_decode_mb}",
                "tile or downscale the image, or raise the limit",
            )
        return data

    def local_path(self, uri: str) -> Path | None:
        """A ``/data/local-files/?d=…`` image read from EXAMINE_DATA_ROOTS, refusing escapes."""
        if not self.settings.data_roots or "/data/local-files/" not in uri:
            return None
        rel = (parse_qs(urlsplit(uri).query).get("d") or [""])[0]
        for root in self.settings.data_roots:
            root = root.resolve()
            # Label Studio's d= is relative to its document root; the mount mirrors it.
            candidate = (root / rel.lstrip("/")).resolve()
            if not candidate.is_relative_to(root):
                raise ImageLoadError(display_uri(uri), "the path escapes the data folder; refusing to read it")
            if candidate.is_file():
                return candidate
        return None
