"""Can the operator reach a tracking server's database and artifact store?

A TCP connect with a short timeout, from the operator's own network position, to the host named in the
backend URI or the artifact store's endpoint. One-label Service names are qualified with the
TrackingServer's namespace, as the pods resolve them; MySQL/MariaDB is not probed at all (stores.py).
It answers "is the host there" honestly and quickly; the server image's `check` goes further
(credentials, schema) where the pods run. Messages name the host and port and never the URI, which
may carry a password.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {
    "postgresql": 5432,
    "postgres": 5432,
    "mysql": 3306,
    "http": 80,
    "https": 443,
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Probe:
    reachable: bool
    reason: str
    message: str


# The dialects the server image has drivers for (psycopg2, PyMySQL; MariaDB speaks mysql://).
SUPPORTED_DATABASES = ("postgresql", "postgres", "mysql")


def unsupported_database(uri: str) -> str | None:
    """Why the server image cannot use this database URI, or None when it can."""
    dialect = urlsplit(uri).scheme.split("+", 1)[0].lower()
    if dialect in SUPPORTED_DATABASES:
        return None
    return (f"{dialect or 'a URI without scheme'}:// is not a database the server image supports: "
            f"use postgresql:// or mysql:// (MariaDB too)")


def database_endpoint(uri: str) -> Endpoint | None:
    """Host and port of a SQLAlchemy database URI; None for embedded stores (sqlite, file)."""
    parts = urlsplit(uri)
    dialect = parts.scheme.split("+", 1)[0].lower()
    if dialect in ("sqlite", "file", ""):
        return None
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname:
        return None
    return Endpoint(parts.hostname, port or DEFAULT_PORTS.get(dialect, 0))


def artifact_endpoint(destination: str, s3_endpoint_url: str | None = None, region: str | None = None) -> Endpoint | None:
    """The host an artifact destination is served from; None for a local volume."""
    parts = urlsplit(destination)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if s3_endpoint_url:
            endpoint = urlsplit(s3_endpoint_url)
            return Endpoint(endpoint.hostname or "", endpoint.port or DEFAULT_PORTS.get(endpoint.scheme, 443))
        return Endpoint(f"s3.{region}.amazonaws.com" if region else "s3.amazonaws.com", 443)
    if scheme == "gs":
        return Endpoint("storage.googleapis.com", 443)
    if scheme in ("wasbs", "wasb", "abfss", "abfs"):
        # wasbs://container@account.blob.core.windows.net/path
        return Endpoint(parts.hostname or "", 443)
    if scheme in ("http", "https"):
        return Endpoint(parts.hostname or "", parts.port or DEFAULT_PORTS[scheme])
    return None


def in_namespace(endpoint: Endpoint, namespace: str) -> Endpoint:
    """A one-label host is a Service name: the pods resolve it in their own namespace, and so must
    the operator, which runs in another one (where it would find nothing, or another Service)."""
    host = endpoint.host
    if not host or "." in host or ":" in host or host == "localhost":
        return endpoint
    return Endpoint(f"{host}.{namespace}.svc", endpoint.port)


def probe_tcp(endpoint: Endpoint, what: str, timeout: float = 2.0) -> Probe:
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return Probe(True, "Reachable", f"{what} at {endpoint} accepts connections")
    except socket.gaierror:
        return Probe(False, "HostNotFound", f"{what} host {endpoint.host} cannot be resolved")
    except (socket.timeout, TimeoutError):
        return Probe(False, "Timeout", f"{what} at {endpoint} did not answer within {timeout:g} s")
    except OSError as exc:
        return Probe(False, "ConnectionFailed", f"{what} at {endpoint} refused the connection ({exc.strerror or exc})")
