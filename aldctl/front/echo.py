"""The command line's one way to print text: control characters neutralised on the way out.

File names, ``--set`` values and strings read back from the journal (written by older
versions, or by a ``--set`` value) reach a terminal through here, so an escape sequence in
one is shown as ``\\x1b...``, never executed (:func:`aldctl.diagnostics.neutralise`, the same
function recipe text goes through)."""

from __future__ import annotations

from typing import Any

import click

from aldctl.diagnostics import neutralise


def echo(message: Any = None, **kwargs: Any) -> None:
    """:func:`click.echo`, with the text neutralised (tab and newline are kept)."""
    if isinstance(message, str):
        message = neutralise(message)
    click.echo(message, **kwargs)
