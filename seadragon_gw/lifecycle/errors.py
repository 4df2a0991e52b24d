"""Refusals the request lifecycle names itself (beyond `seadragon_gw.errors`' kinds)."""

from __future__ import annotations

from ..errors import NotFound


class ModelNotFound(NotFound):
    """No backend serves the model the request names (404). A kind of its own so the
    missing-models log counts these without reading messages."""
