"""aldctl: control and sequencing for atomic layer deposition reactors.

Kept import-light on purpose: ``aldctl --help`` must not pay for pint, pydantic, pymodbus
or textual.
"""

from aldctl._version import __version__

__all__ = ["__version__"]
