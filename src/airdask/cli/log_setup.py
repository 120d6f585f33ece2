"""The ``airdask`` command's own log: its level (``[logging] logging_level``, overridden by
``-v``/``-q``) and its handler on stderr, whose records are masked (no secret reaches it)."""

from __future__ import annotations

import logging

from airdask.config import ConfigError, load_config
from airdask.masking import SecretsFilter, register_config

FORMAT = "%(levelname)s %(name)s: %(message)s"


def cli_level(configured: str | None, *, verbose: int = 0, quiet: int = 0) -> int:
    """The log level: ``-v``/``-q`` when given (``-v`` INFO, ``-vv`` DEBUG, ``-q`` ERROR,
    ``-qq`` CRITICAL, counted from WARNING), otherwise the configured level, else WARNING."""
    if verbose or quiet:
        shifted = logging.WARNING - 10 * verbose + 10 * quiet
        return min(max(shifted, logging.DEBUG), logging.CRITICAL)
    named = logging.getLevelName(configured) if configured else None
    return named if isinstance(named, int) else logging.WARNING


def setup_logging(*, verbose: int = 0, quiet: int = 0) -> int:
    """Set the root level, give the root logger a stderr handler if it has none, and mask
    the records of every root handler. Safe to call again (the flags are known only once
    click has parsed them). Returns the level.

    A configuration that does not load leaves WARNING: the command itself reports the
    configuration error, as its one line.
    """
    try:
        config = load_config()
    except ConfigError:
        configured = None
    else:
        register_config(config)
        configured = config.logging.logging_level
    level = cli_level(configured, verbose=verbose, quiet=quiet)
    root = logging.getLogger()
    if not root.handlers:
        stderr = logging.StreamHandler()
        stderr.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(stderr)
    for handler in root.handlers:
        if not any(isinstance(f, SecretsFilter) for f in handler.filters):
            handler.addFilter(SecretsFilter())
    root.setLevel(level)
    return level
