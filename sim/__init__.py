"""Reactor simulator: physics in integer virtual time, process library, fault injection and
device emulators speaking the real wire protocols. Never imports ``aldctl`` or ``drivers``."""
