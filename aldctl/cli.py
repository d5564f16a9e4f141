"""The ``aldctl`` command line."""

from __future__ import annotations

import click

from aldctl._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aldctl")
def cli() -> None:
    """Control and sequencing for ALD reactors."""


def main() -> None:
    cli()
