"""Errors of the local stack launcher."""

from __future__ import annotations

from collections.abc import Mapping

from qp_assets.settings import Env, SettingsError, load_env


class StackError(RuntimeError):
    """A one-line, user-facing failure (what failed and where its log is); CLI exit code 1."""


class UnknownServiceError(StackError):
    """A service name that the stack does not know; CLI exit code 2."""


def stack_env(environ: Mapping[str, str] | None = None) -> Env:
    """:func:`qp_assets.settings.load_env`, a bad variable raised as a StackError (CLI exit code 1)."""
    try:
        return load_env(environ)
    except SettingsError as exc:
        raise StackError(str(exc)) from None
