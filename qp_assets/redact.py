"""One home for keeping credentials out of the messages we produce (exceptions, log lines, CLI output).

:func:`redact` masks, in any text:

- the password of a URL's user info (``http://user:pw@host`` -> ``http://user:***@host``);
- the value after a secret-looking key in ``key=value``, ``key: value``, ``'key': 'value'`` and JAAS
  ``password="..."`` forms (keys: ``password``, ``secret``, ``sasl.jaas.config``, ``basic.auth.user.info``,
  ``*_SECRET_ACCESS_KEY``, ...);
- every secret value currently set in the environment (the secret variables of
  ``qp_assets.settings.Env``: the SASL and SSL-key passwords, the S3 secret key, the registry's
  ``user:password``, the SMTP password) wherever it appears verbatim, so an error message
  that quotes a config or a request does not leak it either.

:func:`redact_config` masks the values of secret keys of a client configuration (librdkafka, registry,
Connect) before it is printed. Masking is idempotent and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qp_assets.settings import secret_values

MASK = "***"
#: Environment variables whose values are secrets (masked verbatim wherever they appear).
#: Values shorter than this are not masked verbatim (masking "a" everywhere would garble messages).
MIN_SECRET_LEN = 4

_SECRET_KEY = r"(?:[\w.\-]*(?:password|passwd|secret|jaas\.config|user\.info|credentials?|token)[\w.\-]*)"
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")
_KEY_VALUE = re.compile(
    rf"(?P<key>['\"]{_SECRET_KEY}['\"]\s*[=:]\s*|\b{_SECRET_KEY}\s*=\s*)"
    rf"(?P<q>['\"])?(?P<value>(?(q)[^'\"]*|[^\s,;'\"}}\])]+))",
    re.IGNORECASE,
)
_SECRET_KEY_NAME = re.compile(rf"^{_SECRET_KEY}$", re.IGNORECASE)


def _env_secrets(environ: Mapping[str, str] | None) -> list[str]:
    values: set[str] = set()
    for var, value in secret_values(environ).items():
        if var == "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO":
            value = value.partition(":")[2]  # the password alone (the user name is not secret)
        values.add(value)
    return sorted((v for v in values if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info masked (``http://u:***@host/...``); unchanged otherwise."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def strip_userinfo(url: str) -> str:
    """``url`` without any user info (``http://u:pw@host/x`` -> ``http://host/x``)."""
    return re.sub(r"(?P<scheme>[a-zA-Z][\w+.\-]*://)[^/@\s]*@", r"\g<scheme>", url, count=1)


def redact(text: Any, environ: Mapping[str, str] | None = None) -> str:
    """``str(text)`` with URL passwords, secret-key values and the environment's secret values masked."""
    out = redact_url(str(text))
    for secret in _env_secrets(environ):
        out = out.replace(secret, MASK)
    return _KEY_VALUE.sub(lambda m: f"{m['key']}{m['q'] or ''}{MASK}", out)


def is_secret_key(key: str) -> bool:
    """True for configuration keys that hold secrets (``sasl.password``, ``s3.secret.access.key``, ...)."""
    return bool(_SECRET_KEY_NAME.match(key))


def redact_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with secret keys' values masked and URLs' passwords masked (for printing)."""
    return {
        key: MASK if is_secret_key(str(key)) and value not in (None, "") else
        (redact(value) if isinstance(value, str) else value)
        for key, value in config.items()
    }  # fmt: skip


__all__ = [
    "MASK",
    "is_secret_key",
    "redact",
    "redact_config",
    "redact_url",
    "strip_userinfo",
]
