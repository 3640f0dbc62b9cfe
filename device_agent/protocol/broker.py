"""Broker URLs, shared by the host settings and the agent config."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlparse

from device_agent.errors import ConfigError


@dataclass(frozen=True)
class BrokerURL:
    """A parsed ``mqtt://[user:pass@]host[:port]`` or ``mqtts://`` URL."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        """Parse a broker URL. Raises :class:`ConfigError` on anything else."""
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ConfigError(
                f"broker URL {url!r} has scheme {parsed.scheme!r}",
                hint="use mqtt://HOST:PORT or mqtts://HOST:PORT",
            )
        tls = parsed.scheme in ("mqtts", "ssl")
        if not parsed.hostname:
            raise ConfigError(f"broker URL {url!r} has no host", hint="use mqtt://HOST:PORT")
        try:
            port = parsed.port or (8883 if tls else 1883)
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r} has an invalid port", hint="use mqtt://HOST:PORT") from exc
        user = unquote(parsed.username) if parsed.username else None
        password = unquote(parsed.password) if parsed.password else None
        return cls(parsed.hostname, port, tls, user, password)

    def __str__(self) -> str:
        """The URL without credentials (safe to print)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"
