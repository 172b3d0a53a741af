"""The `tuneforge` command: a thin Typer layer over the stage functions (`common.py` holds the one
error path; one module per command group)."""

from .main import app

__all__ = ["app"]
