"""Store reachability observed where the pods run (issue 12, finding 4) and the version that serves
(finding 8), on the real node: the operator installed by its chart, real pods, real databases.

- A database the operator's pod cannot reach while the team's pods can (a short Service name in the
  URI, a firewall rule that rejects the operator pod's address, as a NetworkPolicy that admits only
  the team does on a CNI that enforces them; this node's bridge CNI enforces none, so the rule is an
  iptables REJECT in the node's network namespace): Ready, from the pods' own check.
- MariaDB with its default max_connect_errors: the migration, the pods' check and the server
  complete every handshake, and many operator passes open no connection (Aborted_connects and
  Connection_errors_* do not move).
"""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.operator_fixtures import condition, get_json, wait_for

pytestmark = pytest.mark.timeout(1500)


def _reject_from(real, source_ip: str, port: int):
    """An iptables rule in the node's network namespace: connections from source_ip to port are refused."""
    rule = ["INPUT", "-p", "tcp", "-s", source_ip, "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset"]
    netns = str(real.cluster.node.netns_path)
    subprocess.run(["nsenter", f"--net={netns}", "iptables", "-I", *rule], check=True, capture_output=True, text=True)
    return lambda: subprocess.run(["nsenter", f"--net={netns}", "iptables", "-D", *rule], capture_output=True)


def _operator_pod_ip(real) -> str:
    [pod] = real.operator.pods()
    return pod["status"]["podIP"]


def _check_message(pod: dict) -> str:
    check = next(c for c in pod["status"]["initContainerStatuses"] if c["name"] == "check")
    return check["state"]["terminated"]["message"]


def test_a_database_only_the_teams_pods_reach_by_a_short_name_makes_the_server_ready(real):
    ts = real.example("04-remote-direct.yaml")
    name = ts["metadata"]["name"]
    uri = real.database("short")  # postgres.<namespace>.svc:5432, relayed to the host's PostgreSQL
    short = uri.replace(f"@postgres.{real.namespace}.svc:5432/", "@postgres:5432/")
    assert short != uri
    relay = real._services["postgres"]
    unblock = _reject_from(real, _operator_pod_ip(real), relay._listener.getsockname()[1])
    real._cleanup.append(unblock)
    # The operator's own network position cannot reach it (what the old operator's probe met):
    probe = real.kubectl("exec", "-n", real.operator.namespace, real.operator.pods()[0]["metadata"]["name"], "--",
                         "python3", "-c", "import errno,socket\ntry:\n socket.create_connection(("
                         f"'postgres.{real.namespace}.svc', 5432), timeout=5)\n print('connected')\n"
                         "except socket.gaierror as e:\n print('dns', e)\n"
                         "except OSError as e:\n print(errno.errorcode.get(e.errno, type(e).__name__))",
                         check=False).stdout.strip()
    # Refused by the rule, or, while the rule and kube-proxy's chains settle, unreachable or timed out:
    # each is a connection the operator cannot make. A name that does not resolve is not (the test
    # would then not be about the network position), nor is a connection that succeeds.
    assert probe in ("ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "TimeoutError", "timeout"), probe

    real.secret("forecast-db", {"uri": short})
    real.secret("forecast-s3", {"access-key-id": "unused", "secret-access-key": "unused-in-direct-mode"})
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready(name, MigrationsApplied="True", BackendReachable="True"))
    cond = condition(live, "BackendReachable")
    assert cond["reason"] == "Reachable" and "postgres:5432" in cond["message"] and "answered" in cond["message"], cond
    assert real.postgres.password not in json.dumps(live["status"])

    # finding 8: the version is what the serving pods' image runs (read from the installed MLflow);
    # 04 runs two replicas: each ready pod's check reports it
    pods = real.ready_pods(name)
    assert pods, "Ready, yet no ready tracking pod"
    for pod in pods:
        message = _check_message(pod)
        report = json.loads(message.split("mlflow-entrypoint check-report: ", 1)[1].splitlines()[0])
        assert live["status"]["mlflowVersion"] == report["mlflowVersion"], (live["status"], report)
        installed = real.kubectl("exec", "-n", real.namespace, pod["metadata"]["name"], "-c", "mlflow", "--", "python3",
                                 "-c", "from importlib.metadata import version; print(version('mlflow'))").stdout.strip()
        assert report["mlflowVersion"] == installed and report["databases"][0]["schema"]["state"] == "current"
        assert real.postgres.password not in message


def _mariadb_counters(mysql) -> dict[str, int]:
    rows = mysql.query("mysql", "SHOW GLOBAL STATUS WHERE Variable_name = 'Aborted_connects' "
                                "OR Variable_name LIKE 'Connection_errors_%'")
    return {k: int(v) for k, v in rows}


def test_mariadb_with_default_max_connect_errors_is_never_half_opened(real):
    mysql = real.request.getfixturevalue("mysql")
    assert int(mysql.query("mysql", "SELECT @@max_connect_errors")[0][0]) == 100  # MariaDB's default
    real.expose("mariadb", mysql.port, 3306)
    uri = mysql.create_database().replace(f"@{mysql.host}:{mysql.port}/", "@mariadb:3306/")
    before = _mariadb_counters(mysql)
    ts = real.example("04-remote-direct.yaml")
    name = ts["metadata"]["name"]
    real.secret("forecast-db", {"uri": uri})
    real.secret("forecast-s3", {"access-key-id": "unused", "secret-access-key": "unused-in-direct-mode"})
    real.apply(ts)
    live = real.timed("ready", lambda: real.wait_ready(name, MigrationsApplied="True", BackendReachable="True"))
    cond = condition(live, "BackendReachable")
    assert cond["reason"] == "Reachable" and "mysql mariadb:3306" in cond["message"], cond

    # Many passes: each change of a child queues one (the watch), and the pods' readiness probes run.
    passes_before = _passes(real)
    for i in range(30):
        real.kubectl("annotate", "deployment", name, "-n", real.namespace, f"test.mlflow-operator.dev/poke={i}", "--overwrite")
        time.sleep(0.5)
    wait_for("the operator's passes", lambda: _passes(real) >= passes_before + 10, timeout=120, interval=2)
    time.sleep(25)  # a few readiness probes more (every 10 s): the server's pooled queries
    after = _mariadb_counters(mysql)
    moved = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert not moved, f"connections that ended before the handshake: {moved}"
    assert condition(get_json(real.cluster, "trackingserver", name, "-n", real.namespace), "Ready")["status"] == "True"


def _passes(real) -> int:
    """Reconcile passes so far, from the operator's Prometheus metrics (the chart's metrics port)."""
    pod = real.operator.pods()[0]["metadata"]["name"]
    text = real.kubectl("exec", "-n", real.operator.namespace, pod, "--", "python3", "-c",
                        "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8471/metrics').read().decode())",
                        check=False).stdout
    return int(sum(float(l.split()[-1]) for l in text.splitlines()
                   if l.startswith("mlflow_operator_reconcile_duration_seconds_count")))
