"""Secrets kept out of what airdask shows: config values, log records, error messages and the
dashboard page.

Two layers, as Airflow's secrets masker has:

* **patterns** that need no registration: the password of any ``scheme://user:password@``
  URL, and the value of ``password=``/``token=``/``secret=``/``api_key=``... pairs (query
  strings, ``key: value`` text);
* **registered secrets**: exact strings (a database password, the value of an option marked
  ``sensitive``) replaced wherever they appear, also outside a URL (a driver's error that
  echoes the password alone). Secrets shorter than :data:`MIN_SECRET_CHARS` are not
  registered: masking every ``"abc"`` in every log line would garble more than it hides.

:func:`redact` applies both with the process-wide :class:`SecretsMasker`; the ``airdask``
command registers the configuration's secrets (:func:`register_config`) and puts a
:class:`SecretsFilter` on its log handlers. Showing values in clear is always an explicit
choice of the caller (``airdask config list --show-secrets``).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

if TYPE_CHECKING:
    from airdask.config import Config

MASK = "***"
MIN_SECRET_CHARS = 5

# The password of a URL's userinfo: stops at "/" too, so "http://host:8080/a@b" is not taken
# for user "host" with password "8080/a". A configured URL whose password has a raw "/" is
# still covered: register_config() registers its password as parsed by _URL_PASSWORD.
_URL_CREDENTIALS = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@?#]*:)(?P<secret>[^\s@/]+)(?=@)"
)
# The password of one URL value, parsed like SQLAlchemy's make_url (anything but "@").
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://[^:/@]*:(?P<secret>[^@]*)@")
_SECRET_PAIRS = re.compile(
    r"(?i)(?P<head>\b[\w.\-]*(?:password|passwd|secret|token|api[_\-]?key|access[_\-]?key"
    r"|private[_\-]?key|credentials?)[\w.\-]*[\"']?\s*[=:]\s*[\"']?)(?P<secret>[^\s&;,\"'@]+)"
)


def redact_patterns(text: str) -> str:
    """``text`` with URL passwords and ``password=...``-style values replaced by the mask."""
    text = _URL_CREDENTIALS.sub(lambda m: m["head"] + MASK, text)
    return _SECRET_PAIRS.sub(lambda m: m["head"] + MASK, text)


class SecretsMasker:
    """Registered secrets plus the patterns; thread-safe (log records come from any thread)."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._regex: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        """Mask ``secret`` (and its URL-quoted and unquoted spellings) from now on."""
        spellings = {secret, quote(secret, safe=""), unquote(secret)}
        with self._lock:
            new = {s for s in spellings if len(s) >= MIN_SECRET_CHARS} - self._secrets
            if not new:
                return
            self._secrets |= new
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._regex = re.compile("|".join(re.escape(s) for s in ordered))

    def redact(self, text: str) -> str:
        regex = self._regex
        if regex is not None:
            text = regex.sub(MASK, text)
        return redact_patterns(text)


_MASKER = SecretsMasker()


def default_masker() -> SecretsMasker:
    """The process-wide masker that :func:`redact` and :class:`SecretsFilter` use."""
    return _MASKER


def register_secret(secret: str) -> None:
    _MASKER.add(secret)


def redact(text: str) -> str:
    """``text`` with every registered secret and every pattern masked."""
    return _MASKER.redact(text)


def secrets_of(raw: str, *, sensitive: bool) -> list[str]:
    """What to register for a config value: the password of a URL (in any option), or the
    whole value of a sensitive option that is not a URL."""
    found = _URL_PASSWORD.match(raw)
    if found and found["secret"]:
        return [found["secret"]]
    if sensitive and raw and "://" not in raw:
        return [raw]
    return []


def display_value(raw: str, *, sensitive: bool) -> str:
    """A config value as airdask shows it: a URL keeps everything but its password (the
    reader still sees which database), any other sensitive value is the mask."""
    found = _URL_PASSWORD.match(raw)
    if found and found["secret"]:
        start, end = found.span("secret")
        raw = raw[:start] + MASK + raw[end:]
    elif sensitive and raw and "://" not in raw:
        return MASK
    return redact(raw)


def register_config(config: Config) -> None:
    """Register the secrets of every option of ``config`` with the process-wide masker."""
    from airdask.config import OPTIONS

    for section, key, value in config.items():
        for secret in secrets_of(value.raw, sensitive=OPTIONS[section][key].sensitive):
            register_secret(secret)


class SecretsFilter(logging.Filter):
    """A handler filter that masks the message, the traceback and the stack of each record.

    On a handler (not a logger) it sees the records of every logger that propagates there.
    """

    def __init__(self, masker: SecretsMasker | None = None) -> None:
        super().__init__()
        self.masker = masker or _MASKER

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.masker.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # What logging.Formatter would cache there, computed now so it can be masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.masker.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.masker.redact(record.stack_info)
        return True
