"""The Textual operator console (``aldctl tui``)."""
