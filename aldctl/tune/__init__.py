"""Saturating dose and purge times from one trial: a profile (``dose``) or a tool run."""
