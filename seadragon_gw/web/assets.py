"""The packaged static files, read once and served from memory with their validators.

The set of files is fixed when the app is built: a request can only name one of them, so
there is no path from a URL to the file system (no traversal to guard). Pages carry a
Content-Security-Policy that allows scripts, styles and connections from the gateway
itself only and no inline script, so data shown from the API can never run as code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType

CONTENT_TYPES: Mapping[str, str] = MappingProxyType({
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
})

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType({
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
})
PAGE_HEADERS: Mapping[str, str] = MappingProxyType({
    **SECURITY_HEADERS,
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
})


@dataclass(frozen=True, slots=True)
class Asset:
    """One file: its bytes, content type and a strong ETag (a hash of the bytes)."""

    path: str
    body: bytes
    content_type: str
    etag: str

    @classmethod
    def of(cls, path: str, body: bytes, content_type: str) -> Asset:
        return cls(path, body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')

    @property
    def is_page(self) -> bool:
        return self.path.endswith(".html")

    def headers(self) -> dict[str, str]:
        """`no-cache`: browsers revalidate (a 304 costs a few bytes), so an upgraded
        gateway's files are seen at the next load."""
        base = PAGE_HEADERS if self.is_page else SECURITY_HEADERS
        return {**base, "ETag": self.etag, "Cache-Control": "no-cache"}


class WebAssets:
    """Every file under the package's `static/` folder, by its path relative to it."""

    def __init__(self, files: Mapping[str, Asset]) -> None:
        self._files = MappingProxyType(dict(files))

    @classmethod
    def packaged(cls) -> WebAssets:
        root = resources.files("seadragon_gw.web") / "static"
        return cls({asset.path: asset for asset in _walk(root, "")})

    def get(self, path: str) -> Asset | None:
        return self._files.get(path)

    @property
    def paths(self) -> list[str]:
        return sorted(self._files)


def _walk(folder: Traversable, prefix: str) -> Iterator[Asset]:
    for entry in folder.iterdir():
        path = prefix + entry.name
        if entry.is_dir():
            yield from _walk(entry, path + "/")
            continue
        suffix = "." + entry.name.rpartition(".")[2]
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is not None:  # anything else (an editor's backup) is not served
            yield Asset.of(path, entry.read_bytes(), content_type)
