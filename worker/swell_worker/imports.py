"""Resolves "package.module:attribute" references, so heavy code is imported only when it is used."""

from __future__ import annotations

import importlib
from typing import Any


def load_object(reference: str) -> Any:
    """Import ``module:attribute`` and return the attribute; errors say which reference failed."""
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected 'package.module:attribute', got {reference!r}")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ImportError(f"{module_name} has no attribute {attribute!r} (from {reference!r})") from None
