"""Find the ``Rota`` app a command names as ``module:attribute``."""

from __future__ import annotations

import importlib
import os
import sys

from rota.app import Rota
from rota.core.errors import InvalidOption


def load_app(spec: str) -> Rota:
    """Import ``package.module:app`` (the current directory is importable) and return it."""
    module_name, sep, attr = spec.partition(":")
    if not module_name:
        raise InvalidOption(f"app {spec!r} must look like module:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidOption(f"cannot import {module_name!r}: {exc}") from None
    if sep:
        app = getattr(module, attr, None)
    else:
        found = [v for v in vars(module).values() if isinstance(v, Rota)]
        app = found[0] if len(found) == 1 else None
    if not isinstance(app, Rota):
        raise InvalidOption(f"{spec!r} does not name a rota.Rota app")
    return app
