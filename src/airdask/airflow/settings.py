"""The executor's ``[dask]`` settings, read once when the executor is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airdask.airflow.provider import OPTIONS, SECTION


@dataclass(frozen=True)
class Settings:
    cluster_address: str
    tls_ca: str
    tls_cert: str
    tls_key: str
    connect_timeout: float
    parallelism: int
    pool_resources: str
    worker_python: str
    forkserver: bool
    forkserver_preload: str
    log_max_bytes: int

    @classmethod
    def read(cls, conf: Any) -> Settings:
        """From Airflow's configuration (``conf.get(section, key, fallback=...)``), with the
        provider's defaults as fallbacks, so that it works even where airdask is not
        registered as a provider. A value of the wrong type names the option."""
        values: dict[str, Any] = {}
        for name, option in OPTIONS.items():
            raw = conf.get(SECTION, name, fallback=option.default)
            raw = option.default if raw is None else str(raw).strip()
            try:
                if option.type == "integer":
                    values[name] = int(raw)
                elif option.type == "float":
                    values[name] = float(raw)
                elif option.type == "boolean":
                    values[name] = _boolean(raw)
                else:
                    values[name] = raw
            except ValueError:
                raise ValueError(
                    f"[{SECTION}] {name} must be {'an' if option.type == 'integer' else 'a'} "
                    f"{option.type}, got {raw!r}"
                ) from None
        settings = cls(**values)
        if settings.pool_resources not in ("auto", "strict", "off"):
            raise ValueError(
                f"[{SECTION}] pool_resources must be auto, strict or off, "
                f"got {settings.pool_resources!r}"
            )
        if not settings.cluster_address:
            raise ValueError(f"[{SECTION}] cluster_address is empty: name the Dask scheduler")
        if settings.connect_timeout <= 0:
            raise ValueError(f"[{SECTION}] connect_timeout must be positive")
        return settings


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)
