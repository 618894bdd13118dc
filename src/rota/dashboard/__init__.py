"""``rota dashboard``: a small web UI and JSON API over the same store the workers use.

``create_app(store_url, token)`` builds the ASGI app (Starlette); ``rota dashboard`` serves
it with uvicorn. Needs ``pip install 'rota[dashboard]'``.
"""

from __future__ import annotations

from rota.dashboard.app import create_app, is_loopback

__all__ = ["create_app", "is_loopback"]
