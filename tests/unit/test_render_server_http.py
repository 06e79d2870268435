"""What the server pods are told about metrics, the upload limit and the API shortcut, and how the
Services, ServiceMonitor, Ingress, HTTPRoute and NetworkPolicy expose (or do not expose) metrics."""
from __future__ import annotations

import pytest
from mlflow_operator.render import render
from mlflow_operator.render.environment import byte_count

from .helpers import DATABASE, container, env, load_example, make, of_kind, one
from .spec_cases import INGRESS, S3

METRICS = {"enabled": True, "serviceMonitor": {"enabled": True}}
SPLIT = {"backendStore": DATABASE, "artifacts": {"mode": "Split", "destination": S3}}
GATEWAY = {"parentRefs": [{"name": "shared", "namespace": "gateways"}], "hostnames": ["mlflow.example.com"]}


def ports_by_name(ports):
    return {p["name"]: p for p in ports}


def server_containers(out):
    return [container(d) for d in of_kind(out, "Deployment")]


def test_metrics_have_a_port_of_their_own_on_every_server_and_service():
    out = render(make({**SPLIT, "metrics": METRICS, "ingress": INGRESS}))
    assert len(of_kind(out, "Service")) == 2 and len(of_kind(out, "Deployment")) == 2
    for service in of_kind(out, "Service"):
        assert ports_by_name(service["spec"]["ports"]) == {
            "http": {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
            "metrics": {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP",
                        "appProtocol": "http"},
        }
    for server in server_containers(out):
        assert ports_by_name(server["ports"])["metrics"] == {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
        e = env(server)
        assert e["MLFLOW_OPERATOR_EXPOSE_PROMETHEUS"] == "true" and e["MLFLOW_OPERATOR_METRICS_PORT"] == "9090"
        # the probes stay on the API port
        assert server["readinessProbe"]["httpGet"]["port"] == "http"


def test_the_service_monitor_scrapes_the_metrics_port_of_both_services():
    out = render(make({**SPLIT, "metrics": METRICS}))
    monitor = one(out, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in of_kind(out, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 2
    for service in selected:  # the port it names exists on every Service it selects
        assert "metrics" in ports_by_name(service["spec"]["ports"])


def test_the_ingress_never_routes_the_metrics_port():
    out = render(make({**SPLIT, "metrics": METRICS, "ingress": INGRESS}))
    services = {s["metadata"]["name"]: s for s in of_kind(out, "Service")}
    backends = [p["backend"]["service"] for rule in one(out, "Ingress")["spec"]["rules"] for p in rule["http"]["paths"]]
    assert backends and all(b["port"] == {"name": "http"} for b in backends)
    for b in backends:  # and that name is the API port of the Service it routes to
        assert ports_by_name(services[b["name"]]["spec"]["ports"])["http"]["port"] == 5000


def test_the_http_route_never_routes_the_metrics_port():
    out = render(make({**SPLIT, "metrics": METRICS, "gateway": GATEWAY}))
    refs = [ref for rule in one(out, "HTTPRoute")["spec"]["rules"] for ref in rule["backendRefs"]]
    assert len(refs) == 2 and all(ref["port"] == 5000 for ref in refs)


def test_the_network_policy_admits_its_peers_to_the_metrics_port_only_with_metrics():
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    policy = {"enabled": True, "ingressFrom": peers}
    with_metrics = one(render(make({"metrics": METRICS, "networkPolicy": policy})), "NetworkPolicy")
    [rule] = with_metrics["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "metrics"}]
    assert rule["from"] == [{"podSelector": {}}, *peers]
    without = one(render(make({"networkPolicy": policy})), "NetworkPolicy")
    assert without["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": "http"}]


def test_no_metrics_no_metrics_port():
    out = render(make({**SPLIT, "ingress": INGRESS}))
    for service in of_kind(out, "Service"):
        assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    for server in server_containers(out):
        assert [p["name"] for p in server["ports"]] == ["http"]
        assert "MLFLOW_OPERATOR_METRICS_PORT" not in env(server)
    assert not of_kind(out, "ServiceMonitor")


@pytest.mark.parametrize("quantity, expected", [
    (None, str(5 * 1024 ** 3)), ("0", "0"), ("1048576", "1048576"), ("512Mi", str(512 * 1024 ** 2)),
    ("64Ki", "65536"), ("2Ti", str(2 * 1024 ** 4)),
])
def test_every_server_enforces_the_upload_limit_itself(quantity, expected):
    spec = {**SPLIT, "http": {"maxUploadSize": quantity}} if quantity else dict(SPLIT)
    servers = server_containers(render(make(spec)))
    assert len(servers) == 2  # metadata and artifacts pods alike
    for server in servers:
        assert env(server)["MLFLOW_OPERATOR_MAX_UPLOAD_SIZE"] == expected


def test_the_team_examples_limit_reaches_the_server_and_the_ingress_alike():
    out = render(load_example("08-team.yaml"))
    assert env(container(one(out, "Deployment")))["MLFLOW_OPERATOR_MAX_UPLOAD_SIZE"] == str(2 * 1024 ** 3)
    assert one(out, "Ingress")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "2g"


def test_byte_count_reads_binary_quantities():
    assert [byte_count(q) for q in ("0", "7", "1Ki", "3Mi", "5Gi", "1Ti")] == [
        0, 7, 1024, 3 * 1024 ** 2, 5 * 1024 ** 3, 1024 ** 4]


@pytest.mark.parametrize("setting, expected", [(None, "true"), (True, "true"), (False, "false")])
def test_the_api_shortcut_follows_the_spec(setting, expected):
    spec = {**SPLIT, "http": {"apiShortcut": setting}} if setting is not None else dict(SPLIT)
    for server in server_containers(render(make(spec))):
        assert env(server)["MLFLOW_OPERATOR_ASGI_SHORTCUT"] == expected
