"""The operator's Ingress and HTTPRoute, as it renders them, served by a real controller on the real node.

Traefik (hack/localcluster/ingress_controller.py) reads the Ingress through its ingress-nginx
provider (IngressClass `nginx`) and the HTTPRoute through its Gateway API provider (Gateway
`traefik/mlflow`). Clients sit outside the cluster and name the server by its host name. Which pod
served each request is read from Traefik's access log (the backend's address), so a path rule that
sends an artifact upload to the wrong Deployment fails here. What Traefik honours of what we render
is the README's table ("Ingress controllers and Gateway API implementations"); each row is checked
here, so a row that stops being true fails.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid

import pytest

from tests.operator_fixtures import get_json, wait_for
from tests.workload.server_env import last_json, tutorial_env
from tests.workload.server_env import TUTORIAL

from .ingress_client import (DOMAIN, backend_ip, client_script, is_mlflow_json, pod_ips, request, served,
                             wait_routed)

pytestmark = [pytest.mark.node, pytest.mark.timeout(1800)]

API = "mlflow-operator.dev/v1alpha1"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
TRACKING_API = "/api/2.0/mlflow/"
# Traefik's defaults for the upstream read/send timeouts of an Ingress without the annotations
# (its ingress-nginx provider copies ingress-nginx's 60 s).
CONTROLLER_DEFAULT_TIMEOUT = 60


def server(real, name: str, **spec) -> dict:
    ts = {"apiVersion": API, "kind": "TrackingServer", "metadata": {"name": name, "namespace": real.namespace},
          "spec": spec}
    real.apply(ts)
    return ts


def host_for(real, name: str) -> str:
    return f"{name}.{real.namespace}.{DOMAIN}"


def ingress(node_ingress, host: str, **more) -> dict:
    return {"ingress": {"className": node_ingress.ingress_class, "hosts": [host], **more}}


def blob(size: int) -> bytes:
    return os.urandom(size)


def log_entry(node_ingress, host: str, path: str, method: str) -> dict:
    entries = wait_for(f"the controller's access-log line for {method} {host}{path}",
                       lambda: served(node_ingress, host, path, method), timeout=30, interval=1)
    return entries[-1]


# ---------------------------------------------------------------- Ingress
def test_ingress_by_host_name_serves_the_stock_client(real, node_ingress):
    """spec.ingress (className nginx): the seed tutorial with the stock client against
    http://<host>, through the controller; its tracking calls and its artifact uploads were served
    by the server's pod; another host name is not routed there."""
    host = host_for(real, "web")
    server(real, "web", **ingress(node_ingress, host))
    real.timed("ready", lambda: real.wait_ready("web"))
    real.timed("routed", lambda: wait_routed(node_ingress, host))

    out = real.timed("tutorial", lambda: last_json(real.client(client_script(node_ingress, TUTORIAL),
                                                               tutorial_env(f"http://{host}")).stdout))
    assert out["artifact_uri"].startswith("mlflow-artifacts:/"), out

    ips = pod_ips(real, "web", "tracking")
    tracking = served(node_ingress, host, TRACKING_API)
    uploads = served(node_ingress, host, ARTIFACTS, "PUT")
    assert tracking and uploads, f"no access-log lines for {host}: {node_ingress.access_log()[-5:]}"
    assert {backend_ip(e) for e in tracking + uploads} == ips, (tracking[-3:], uploads[-3:], ips)
    assert all(e["OriginStatus"] == 200 for e in uploads), uploads

    other = request(node_ingress, host_for(real, "nobody"), "GET", "/health")
    assert other.status == 404 and b"404 page not found" in other.body, f"another host name reached a server: {other}"


def test_ingress_upload_limit_and_buffering(real, node_ingress):
    """spec.http.maxUploadSize through Traefik's ingress-nginx provider, both ways the README states:

    - as rendered (`proxy-request-buffering: off`, uploads streamed to the pod): Traefik does not
      apply `proxy-body-size` (it reads it only when it buffers), so the 413 is the server's own,
      and nothing is stored;
    - with `proxy-request-buffering: "on"` in spec.ingress.annotations: the controller answers 413
      itself and the request never reaches a pod; an upload under the limit still arrives whole.
    """
    streamed, buffered = host_for(real, "streamed"), host_for(real, "buffered")
    limit = {"http": {"maxUploadSize": "2Mi"}}
    server(real, "streamed", **limit, **ingress(node_ingress, streamed))
    server(real, "buffered", **limit, **ingress(node_ingress, buffered, annotations={
        "nginx.ingress.kubernetes.io/proxy-request-buffering": "on"}))
    real.timed("ready", lambda: (real.wait_ready("streamed"), real.wait_ready("buffered")))
    for host in (streamed, buffered):
        wait_routed(node_ingress, host)
    over = blob(3 * 1024 * 1024)

    path = f"{ARTIFACTS}/limit/over-{uuid.uuid4().hex[:6]}.bin"
    answer = request(node_ingress, streamed, "PUT", path, over)
    assert answer.status == 413 and is_mlflow_json(answer) and b"maxUploadSize" in answer.body, answer
    entry = log_entry(node_ingress, streamed, path, "PUT")
    assert entry["OriginStatus"] == 413 and backend_ip(entry) in pod_ips(real, "streamed", "tracking"), entry
    assert request(node_ingress, streamed, "GET", path).status == 404, "a refused upload left a file"

    path = f"{ARTIFACTS}/limit/over-{uuid.uuid4().hex[:6]}.bin"
    answer = request(node_ingress, buffered, "PUT", path, over)
    assert answer.status == 413 and not is_mlflow_json(answer), f"the 413 must be the controller's: {answer}"
    entry = log_entry(node_ingress, buffered, path, "PUT")
    assert not entry.get("OriginStatus") and not entry.get("ServiceAddr"), f"the request reached a pod: {entry}"
    assert request(node_ingress, buffered, "GET", path).status == 404, "a refused upload left a file"

    under = blob(1024 * 1024)
    path = f"{ARTIFACTS}/limit/under.bin"
    assert request(node_ingress, buffered, "PUT", path, under).status == 200
    got = request(node_ingress, buffered, "GET", path)
    assert got.status == 200 and hashlib.sha256(got.body).digest() == hashlib.sha256(under).digest(), got


def test_ingress_long_upload_is_not_cut_at_the_controllers_default_timeout(real, node_ingress):
    """An upload that takes longer than the controller's default timeouts (60 s) arrives whole,
    because the Ingress carries spec.http.timeoutSeconds (600); and the same annotation, set short
    (timeoutSeconds 10) on another server, makes a 25 s upload fail at the controller: it reads the
    value we render, not its default."""
    long_host, short_host = host_for(real, "patient"), host_for(real, "impatient")
    server(real, "patient", **ingress(node_ingress, long_host))
    server(real, "impatient", http={"timeoutSeconds": 10}, **ingress(node_ingress, short_host))
    real.timed("ready", lambda: (real.wait_ready("patient"), real.wait_ready("impatient")))
    for host in (long_host, short_host):
        wait_routed(node_ingress, host)

    chunk = 16 * 1024
    body = blob(chunk * (CONTROLLER_DEFAULT_TIMEOUT + 15))  # one chunk a second: 75 s
    path = f"{ARTIFACTS}/slow/long.bin"
    answer = real.timed("long upload", lambda: request(node_ingress, long_host, "PUT", path, body, chunk=chunk,
                                                        pace=1.0, timeout=300))
    assert answer.status == 200 and answer.seconds > CONTROLLER_DEFAULT_TIMEOUT + 5, answer
    got = request(node_ingress, long_host, "GET", path)
    assert got.status == 200 and hashlib.sha256(got.body).digest() == hashlib.sha256(body).digest(), \
        f"downloaded {len(got.body)} bytes of {len(body)}"

    short = blob(chunk * 25)
    path = f"{ARTIFACTS}/slow/cut.bin"
    cut = real.timed("cut upload", lambda: request(node_ingress, short_host, "PUT", path, short, chunk=chunk,
                                                    pace=1.0, timeout=120))
    # Traefik's read deadline on the pod's connection expires 10 s into the upload; it answers
    # once it has forwarded the body (measured: 502 after 24 s). Under its 60 s default, or any
    # value it ignored, this upload would pass as the long one did.
    assert cut.status in (502, 504), f"a 25 s upload with timeoutSeconds 10 must fail at the controller: {cut}"
    entry = log_entry(node_ingress, short_host, path, "PUT")
    assert entry["DownstreamStatus"] == cut.status, entry


# ---------------------------------------------------------------- Split mode, Ingress and HTTPRoute
def split_server(real, name: str, exposure: dict) -> None:
    real.secret(f"{name}-db", {"uri": real.database(name)})
    real.s3_secret(f"{name}-s3")
    bucket = real.bucket(f"{name}-{real.namespace}"[:63].rstrip("-"))
    server(real, name, backendStore={"type": "Database", "uri": {"secretKeyRef": {"name": f"{name}-db", "key": "uri"}}},
           artifacts={"mode": "Split", "destination": f"s3://{bucket}/mlflow", "replicas": 1,
                      "s3": {"endpointUrl": real.s3_endpoint(), "region": "us-east-1",
                             "accessKeyId": {"secretKeyRef": {"name": f"{name}-s3", "key": "access-key-id"}},
                             "secretAccessKey": {"secretKeyRef": {"name": f"{name}-s3", "key": "secret-access-key"}}}},
           **exposure)
    real.timed("ready", lambda: real.wait_ready(name, timeout=900))


SPLIT_CLIENT = r"""
import json, os, tempfile
import mlflow
mlflow.set_experiment("split-" + os.urandom(3).hex())
with mlflow.start_run() as run:
    mlflow.log_metric("m", 1.0)
    d = tempfile.mkdtemp()
    with open(os.path.join(d, "note.txt"), "w") as f:
        f.write("split mode through the controller\n")
    mlflow.log_artifact(os.path.join(d, "note.txt"))
got = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="note.txt")
print(json.dumps({"run_id": run.info.run_id, "note": open(got).read(),
                  "metric": mlflow.get_run(run.info.run_id).data.metrics["m"]}))
"""


def assert_split_routing(real, node_ingress, name: str, host: str) -> None:
    wait_routed(node_ingress, host)
    out = last_json(real.client(client_script(node_ingress, SPLIT_CLIENT), {"MLFLOW_TRACKING_URI": f"http://{host}"}).stdout)
    assert out["note"] == "split mode through the controller\n" and out["metric"] == 1.0, out
    tracking_ips, artifact_ips = pod_ips(real, name, "tracking"), pod_ips(real, name, "artifacts")
    assert tracking_ips and artifact_ips and not tracking_ips & artifact_ips
    artifact_calls = served(node_ingress, host, "/api/2.0/mlflow-artifacts/")
    tracking_calls = served(node_ingress, host, TRACKING_API)
    assert {e["RequestMethod"] for e in artifact_calls} >= {"PUT", "GET"}, artifact_calls
    assert {backend_ip(e) for e in artifact_calls} == artifact_ips, \
        f"artifact requests must reach the artifacts pods {artifact_ips}: {artifact_calls}"
    assert tracking_calls and {backend_ip(e) for e in tracking_calls} == tracking_ips, \
        f"tracking requests must reach the tracking pods {tracking_ips}: {tracking_calls[-5:]}"


def test_split_mode_ingress_paths_reach_the_right_pods(real, node_ingress):
    """Split mode behind spec.ingress: /api/2.0/mlflow-artifacts/ is served by the artifacts pods,
    the tracking API by the metadata pods (the backend address in the controller's access log)."""
    host = host_for(real, "split")
    split_server(real, "split", ingress(node_ingress, host))
    assert_split_routing(real, node_ingress, "split", host)


def test_split_mode_httproute_by_host_name(real, node_ingress):
    """Split mode behind spec.gateway: the rendered HTTPRoute is Accepted by the Gateway's
    controller with its references resolved; the stock client works through it by host name and
    each path rule reaches its Deployment's pods. Traefik implements no HTTPRoute timeouts (the
    GatewayClass says so in its supported features): the README names that limit."""
    host = host_for(real, "routed")
    gateway = node_ingress.gateway
    split_server(real, "routed", {"gateway": {"parentRefs": [dict(gateway)], "hostnames": [host]}})

    def accepted():
        route = get_json(real.cluster, "httproute", "routed", "-n", real.namespace)
        parents = (route.get("status") or {}).get("parents") or []
        conds = {c["type"]: c["status"] for p in parents for c in p.get("conditions", [])}
        return parents if conds.get("Accepted") == "True" and conds.get("ResolvedRefs") == "True" else None

    parents = wait_for("the HTTPRoute Accepted with resolved refs", accepted, timeout=120, interval=1)
    assert {p["controllerName"] for p in parents} == {"traefik.io/gateway-controller"}, parents
    assert_split_routing(real, node_ingress, "routed", host)

    features = {f["name"] for f in (get_json(real.cluster, "gatewayclass", "traefik").get("status") or {})
                .get("supportedFeatures", [])}
    assert "HTTPRoute" in features and "HTTPRouteRequestTimeout" not in features, sorted(features)
    print(json.dumps({"traefik_supported_features": sorted(features)}))
