"""Errors raised by the VQE engine on bad input."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (molecule, configuration, resources). The message names the molecule and field."""
