"""``redis+sentinel://`` URLs (REDIS_URL, BROKER_URL): a Redis primary found through
Redis Sentinel. Parsing only (the settings validate with it; the clients are built in
workers/messaging/redis_clients.py).

    redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]

The password is the primary's (and its replicas'); the sentinels are asked without one.
No error message repeats the URL: it holds the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEME = "redis+sentinel"
DEFAULT_PORT = 26379  # a sentinel's port when an address names none


@dataclass(frozen=True)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL; its repr never shows the password."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def where(self) -> str:
        """The sentinels and the service, for logs (no credentials)."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"{hosts}/{self.service}/{self.db}"


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def _address(item: str, index: int) -> tuple[str, int]:
    where = f"sentinel address {index}"
    if not item:
        raise ValueError(f"{where} is empty (addresses are host:port, separated by commas)")
    if item.startswith("["):  # [IPv6]:port
        host, closed, rest = item[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{where} has an unclosed [IPv6] bracket")
        port_text = rest[1:]
    elif ":" in item:
        host, _, port_text = item.rpartition(":")
    else:
        host, port_text = item, ""
    if not host or "/" in host or "@" in host:
        raise ValueError(f"{where} names no valid host")
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{where} has a port that is not a number from 1 to 65535")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The URL's sentinels, service, database and credentials. Raises ValueError saying
    what is wrong, never repeating the URL or the password."""
    prefix = f"{SCHEME}://"
    if not is_sentinel_url(url):
        raise ValueError(f"the scheme must be {SCHEME}")
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"a {SCHEME} URL takes no query or fragment")
    netloc, _, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        if not colon:
            raise ValueError("the credentials must be :password@ or user:password@")
        username, password = (unquote(user) or None), (unquote(secret) or None)
    if not hosts.strip():
        raise ValueError("the URL names no sentinel (host:port[,host:port...])")
    addresses = tuple(_address(item.strip(), i) for i, item in enumerate(hosts.split(","), 1))
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # a trailing slash
    if not parts or not parts[0]:
        raise ValueError("the URL names no service (/service_name[/db] after the sentinels)")
    if len(parts) > 2:
        raise ValueError("the path must be /service_name or /service_name/db")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError("the database after the service name must be a number")
        db = int(parts[1])
    return SentinelTarget(addresses, unquote(parts[0]), db, username, password)
