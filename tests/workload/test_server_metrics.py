"""Prometheus metrics on a port of their own: a scrape works with basic-auth on and off (what the
ServiceMonitor does), it sums the samples of every worker, and the API port does not serve /metrics
(with --expose-prometheus alone MLflow serves it there: behind basic-auth, or to anyone)."""
from __future__ import annotations

import http.client
import re

import pytest
import requests

from testservices._util import free_port
from testservices.mlflowproc import run_entrypoint, start_entrypoint

from .server_env import ADMIN, ADMIN_PASSWORD, O, basic_auth, proxied

pytestmark = pytest.mark.timeout(600)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
REQUESTS = 12


@pytest.fixture(scope="module", params=["auth-off", "basic-auth"])
def server(request, server_venv, postgres, _migrated_template, tmp_path_factory):
    work = tmp_path_factory.mktemp(request.param)
    env = proxied(postgres.create_database(template=_migrated_template), str(work / "artifacts"),
                  **{O + "EXPOSE_PROMETHEUS": "true", O + "METRICS_PORT": str(free_port()), O + "WORKERS": "2"})
    auth = None
    if request.param == "basic-auth":
        env.update(basic_auth(postgres.create_database()))
        migrated = run_entrypoint(server_venv, "migrate", env, work / "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        auth = (ADMIN, ADMIN_PASSWORD)
    srv = start_entrypoint(server_venv, env, work / "server")
    srv.auth = auth
    srv.metrics_url = f"http://127.0.0.1:{env[O + 'METRICS_PORT']}/metrics"
    try:
        yield srv
    finally:
        srv.stop()


def raw_get(port: int, path: str, headers: dict | None = None) -> int:
    """GET with the path sent exactly as written (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()


def request_count(text: str) -> float:
    """MLflow's request counter summed over its series (all workers, all endpoints)."""
    return sum(float(m.group(1)) for m in re.finditer(r"^mlflow_http_request_total\{[^}]*\} (\S+)$", text, re.M))


def test_a_scrape_without_credentials_gets_every_workers_samples(server):
    denied = requests.get(server.url + SEARCH, timeout=10).status_code
    assert denied == (401 if server.auth else 200)  # the API port is what the mode says
    before = request_count(requests.get(server.metrics_url, timeout=10).text)
    for _ in range(REQUESTS):  # new connections: spread over both workers
        assert requests.get(server.url + SEARCH, auth=server.auth, timeout=10).status_code == 200
    scrape = requests.get(server.metrics_url, timeout=10)
    assert scrape.status_code == 200, scrape.text[:300]
    assert scrape.headers["content-type"].startswith("text/plain")
    assert request_count(scrape.text) >= before + REQUESTS, scrape.text[:2000]
    assert 'mlflow_http_request_duration_seconds_bucket{' in scrape.text


def test_the_api_port_does_not_serve_metrics(server):
    port = server.port
    credentials = {}
    if server.auth:
        import base64

        credentials = {"Authorization": "Basic " + base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()}
    for path in ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/metrics?x=1"):
        for headers in ({}, credentials):
            assert raw_get(port, path, headers) == 404, (path, headers)
    # with the credentials the API itself still answers: the 404 is not an auth failure in disguise
    assert raw_get(port, SEARCH, credentials) == 200


def test_the_log_says_where_metrics_are(server):
    assert f"Prometheus metrics on 127.0.0.1:{server.metrics_url.split(':')[2].split('/')[0]}/metrics" in server.output()
