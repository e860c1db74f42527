"""digitlab's service: `create_app` (FastAPI) and `serve` (run it on uvicorn)."""

from .app import MAX_BODY, create_app, serve

__all__ = ["MAX_BODY", "create_app", "serve"]
