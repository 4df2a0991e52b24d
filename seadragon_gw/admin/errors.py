"""How admin operations fail, beyond the shared kinds (InvalidInput, NotFound, Conflict)."""

from __future__ import annotations

from ..errors import NotPermitted


class OutsideModelScope(NotPermitted):
    """A model-restricted admin key asked to grant models (or all models) it does not have."""
