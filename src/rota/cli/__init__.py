"""The command line (``rota ...``): click commands, the demo and its app."""

from rota.cli.main import cli, main

__all__ = ["cli", "main"]
