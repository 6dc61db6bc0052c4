"""Console output helpers shared by every command."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import segno
import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def show_qr(uri: str) -> None:
    """Render an otpauth:// URI as a QR code in the terminal."""
    segno.make(uri, error="m").terminal(compact=True)
