"""Reachability of a TrackingServer's database and artifact store, as status conditions see it."""
from __future__ import annotations

import time
from urllib.parse import urlsplit

from ..api import TrackingServer
from ..api import derived as d
from .reachability import Probe, artifact_endpoint, database_endpoint, in_namespace, probe_tcp, unsupported_database
from .reconcile import SecretReader

# Probes are cheap but a pass can run often (every child event): reuse a result for a few seconds.
CACHE_SECONDS = 5.0
_cache: dict[tuple[str, str], tuple[float, Probe]] = {}


def _cached(key: tuple[str, str], what: str, endpoint) -> Probe:
    hit = _cache.get(key)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    probe = probe_tcp(endpoint, what)
    _cache[key] = (time.monotonic() + CACHE_SECONDS, probe)
    return probe


def backend_probe(ts: TrackingServer, secrets: SecretReader) -> Probe:
    spec = ts.spec
    if not d.has_backend(spec):
        return Probe(True, "NotApplicable", "an artifacts-only server has no backend store")
    if d.backend_type(spec) != "Database":
        return Probe(True, "Embedded", f"{d.backend_type(spec)} on the TrackingServer's volume")
    ref = spec.backend_store.uri.secret_key_ref
    uri = secrets.value(ref.name, ref.key)
    if uri is None:
        return Probe(False, "SecretNotFound", f"Secret {ref.name} key {ref.key} not found")
    problem = unsupported_database(uri)
    if problem:
        return Probe(False, "UnsupportedDatabase", f"the URI in Secret {ref.name} key {ref.key}: {problem}")
    if urlsplit(uri).scheme.split("+", 1)[0].lower() == "mysql":
        # A connection closed before the handshake completes counts against MySQL/MariaDB's
        # max_connect_errors (default 100): the server would block the operator's source address
        # (behind SNAT, the node's, so every pod on it). The pods' wait-for-backend and the
        # server's schema check connect with credentials; the operator does not.
        return Probe(True, "NotProbed", "MySQL/MariaDB is not probed by the operator (an unfinished handshake "
                     "counts against max_connect_errors); the pods connect to it at start")
    endpoint = database_endpoint(uri)
    if endpoint is None:
        return Probe(False, "InvalidURI", f"the URI in Secret {ref.name} key {ref.key} names no database host")
    endpoint = in_namespace(endpoint, ts.namespace)
    return _cached((ts.namespace, f"db:{endpoint}"), "database", endpoint)


def artifact_probe(ts: TrackingServer) -> Probe:
    spec = ts.spec
    target = spec.artifacts.default_artifact_root if spec.artifacts.mode == "Direct" else d.artifacts_destination(spec)
    if not target or target.startswith("/"):
        return Probe(True, "Volume", f"artifacts are stored on the TrackingServer's volume at {target}")
    s3 = spec.artifacts.s3
    if not (s3 and s3.endpoint_url):
        # AWS S3, GCS and Azure are managed services whose endpoints are always up; what fails there is
        # credentials or permissions, which a connection cannot tell. The image's `check` covers those.
        return Probe(True, "ManagedService", f"{target.split('://')[0]}:// is a managed cloud service (not probed)")
    endpoint = artifact_endpoint(target, s3.endpoint_url, s3.region)
    if endpoint is None:
        return Probe(True, "NotProbed", f"no network endpoint to check for {target.split('://')[0]}://")
    endpoint = in_namespace(endpoint, ts.namespace)
    return _cached((ts.namespace, f"store:{endpoint}"), "artifact store", endpoint)


def probe_stores(ts: TrackingServer, secrets: SecretReader) -> list[Probe]:
    return [backend_probe(ts, secrets), artifact_probe(ts)]
