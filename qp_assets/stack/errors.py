"""Errors of the local stack launcher."""

from __future__ import annotations


class StackError(RuntimeError):
    """A one-line, user-facing failure (what failed and where its log is); CLI exit code 1."""


class UnknownServiceError(StackError):
    """A service name that the stack does not know; CLI exit code 2."""
