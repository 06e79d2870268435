"""The kubelet stand-in: one real Node, and the pods the scheduler binds to it run as processes.

Node: registered with the node's own credentials (CN=system:node:<name>, group system:nodes), so the
Node authorizer and the NodeRestriction admission plugin check every call as they check a kubelet's:
it can read only the Secrets, ConfigMaps and volumes of pods bound to it, and write only their status.
Heartbeats: a coordination.k8s.io Lease in kube-node-lease renewed every 10 s, and the Ready condition
refreshed every minute. The node is tainted `mlflow-operator.dev/runner=true:NoSchedule` and labelled
`mlflow-operator.dev/runner=true`: only pods that tolerate and select it land here.

Pods (one thread each): admission (a spec the runner does not implement is rejected: phase Failed,
reason PodRunnerUnsupported, with the list); a pod IP (network.py); volumes; init containers in order,
each to completion; then the containers, each a process in its own process group started by
nsexec.py. Restarts follow restartPolicy with the kubelet's back-off (10 s doubling to 5 min,
CrashLoopBackOff). Probes (httpGet, tcpSocket) run as the kubelet runs them: startupProbe gates the
others, readinessProbe drives the container's and the pod's Ready condition, livenessProbe and a
failed startupProbe restart the container. A terminated container reports its real exit code
(128+signal when killed), reason Completed or Error, and, with terminationMessagePolicy
FallbackToLogsOnError, the tail of its log. Deletion: SIGTERM to the process group, SIGKILL after the
grace period, then the pod object is deleted (grace 0, uid precondition) as the kubelet does.

Not emulated: user and group IDs (processes run as the runner's user: the virtualenvs live under its
home), capabilities, seccomp, resource requests and limits (nothing is enforced, OOMKilled never
happens), image pulls, exec probes and lifecycle hooks (refused), the termination-message file,
`kubectl logs/exec/port-forward` (the kubelet API is not served: use PodRunner.logs()),
NetworkPolicy, and updates of Secret volumes after the pod started.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from .images import LISTEN_ADDRESS_ENV, ImageStore
from .kube import Informer, Kube, Obj, ns_path
from .network import IPAM, ServiceNetwork, loopback_of
from .resolve import Sources, Unresolvable, prepare_volumes, resolve_container, service_link_env, unsupported

log = logging.getLogger("podrunner")

NSEXEC = Path(__file__).with_name("nsexec.py")
RUNNER_LABEL = "mlflow-operator.dev/runner"
LEASE_SECONDS = 40
RENEW_SECONDS = 10
BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
RETRY_SECONDS = 2.0
HOST_IP = "127.0.0.1"
KUBELET_VERSION = "v1.35.4"


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Deleting(Exception):
    """The pod is being deleted (or is gone): stop what it runs."""


# ---- the node ----------------------------------------------------------------------------------

class NodeAgent:
    def __init__(self, kube: Kube, name: str, labels: dict[str, str], taints: list[Obj]):
        self.kube, self.name, self.labels, self.taints = kube, name, labels, taints
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"node-{name}", daemon=True)
        self.renewals = 0
        self.errors: list[str] = []

    def register(self) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux",
                                                        "kubernetes.io/arch": "amd64", **self.labels},
                         "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
            "spec": {"taints": self.taints},
        }
        try:
            self.kube.create("/api/v1/nodes", node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.heartbeat()
        self.renew()
        self.thread.start()

    def heartbeat(self) -> None:
        stamp = now()

        def cond(type_: str, status: str, reason: str, message: str) -> Obj:
            return {"type": type_, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}

        status = {
            "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "pod runner: not measured"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "pod runner: not measured"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "pod runner: not measured"),
                cond("Ready", "True", "KubeletReady", "pod runner is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": os.uname().release,
                         "osImage": "pod runner (tests/workload/podrunner)", "containerRuntimeVersion": "podrunner://1",
                         "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        }
        self.kube.strategic_patch(f"/api/v1/nodes/{self.name}/status", {"status": status})

    def renew(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.name}"
        lease = self.kube.get(path)
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now_micro()}
        if lease is None:
            self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": "kube-node-lease"}, "spec": spec})
        else:
            lease["spec"].update(spec)
            self.kube.request("PUT", path, body=lease)
        self.renewals += 1

    def _loop(self) -> None:
        beats = 0
        while not self.stopped.wait(RENEW_SECONDS):
            try:
                self.renew()
                beats += 1
                if beats % 6 == 0:
                    self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - retried at the next tick
                self.errors.append(repr(exc))

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


# ---- containers --------------------------------------------------------------------------------

class Container:
    """One container of a pod across its restarts."""

    def __init__(self, spec: Obj, init: bool):
        self.spec, self.init, self.name = spec, init, spec["name"]
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "PodInitializing" if not init else "ContainerCreating"}}
        self.last_state: Obj = {}
        self.proc: subprocess.Popen | None = None
        self.instance = 0
        self.container_id = ""
        self.started = False
        self.ready = False
        self.backoff = BACKOFF_START
        self.next_start = 0.0
        self.kill_reason: str | None = None
        self.log: Path | None = None
        self.error_file: Path | None = None
        self.image_id = ""
        self.started_at: str | None = None
        self.done = False  # terminated for good (no restart)

    def status(self) -> Obj:
        out = {"name": self.name, "image": self.spec["image"], "imageID": self.image_id, "ready": self.ready,
               "restartCount": self.restart_count, "state": self.state, "lastState": self.last_state}
        if not self.init:
            out["started"] = self.started
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class Prober(threading.Thread):
    """The kubelet's probe workers for one run of one container."""

    def __init__(self, worker: "PodWorker", c: Container, instance: int):
        super().__init__(name=f"probe-{worker.name}-{c.name}", daemon=True)
        self.worker, self.c, self.instance = worker, c, instance

    def alive(self) -> bool:
        return self.c.instance == self.instance and self.c.proc is not None and self.c.proc.poll() is None \
            and not self.worker.stopping.is_set()

    def probe(self, probe: Obj) -> tuple[bool, str]:
        timeout = probe.get("timeoutSeconds", 1)
        ip = loopback_of(self.worker.ip)
        if "tcpSocket" in probe:
            port = self.worker.port_number(self.c, probe["tcpSocket"]["port"])
            try:
                with socket.create_connection((ip, port), timeout=timeout):
                    return True, ""
            except OSError as exc:
                return False, f"dial tcp {self.worker.ip}:{port}: {exc.strerror or exc}"
        get = probe["httpGet"]
        port = self.worker.port_number(self.c, get["port"])
        path = get.get("path", "/")
        headers = {"Host": f"{self.worker.ip}:{port}", "User-Agent": f"kube-probe/{KUBELET_VERSION[1:5]}"}
        headers.update({h["name"]: h["value"] for h in get.get("httpHeaders") or []})
        conn_type = http.client.HTTPSConnection if get.get("scheme") == "HTTPS" else http.client.HTTPConnection
        kwargs = {}
        if get.get("scheme") == "HTTPS":
            import ssl

            kwargs["context"] = ssl._create_unverified_context()  # the kubelet skips verification too
        conn = conn_type(ip, port, timeout=timeout, **kwargs)
        try:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            resp.read(10240)
            if 200 <= resp.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            return False, f'Get "http://{self.worker.ip}:{port}{path}": {exc}'
        finally:
            conn.close()

    def run(self) -> None:
        spec = self.c.spec
        startup, readiness, liveness = spec.get("startupProbe"), spec.get("readinessProbe"), spec.get("livenessProbe")
        t0 = time.monotonic()
        due = {name: t0 + (p.get("initialDelaySeconds", 0)) for name, p in
               (("startup", startup), ("readiness", readiness), ("liveness", liveness)) if p}
        counts = {name: [0, 0] for name in due}  # consecutive successes, failures
        if startup is None:
            self.c.started = True
            self.c.ready = readiness is None
            self.worker.changed.set()
        while self.alive():
            t = time.monotonic()
            for name, probe in (("startup", startup), ("readiness", readiness), ("liveness", liveness)):
                if probe is None or due[name] > t or not self.alive():
                    continue
                if name != "startup" and not self.c.started:
                    continue
                if name == "startup" and self.c.started:
                    continue
                ok, why = self.probe(probe)
                if not self.alive():
                    return
                due[name] = time.monotonic() + probe.get("periodSeconds", 10)
                succ, fail = counts[name]
                succ, fail = (succ + 1, 0) if ok else (0, fail + 1)
                counts[name] = [succ, fail]
                if not ok:
                    self.worker.event("Warning", "Unhealthy", f"{name.capitalize()} probe failed: {why}", self.c)
                if name == "startup":
                    if ok and succ >= probe.get("successThreshold", 1):
                        self.c.started = True
                        self.c.ready = readiness is None
                        if readiness:
                            due["readiness"] = time.monotonic()
                        if liveness:
                            due["liveness"] = time.monotonic() + liveness.get("initialDelaySeconds", 0)
                        self.worker.changed.set()
                    elif fail >= probe.get("failureThreshold", 3):
                        self.worker.kill_container(self.c, f"Startup probe failed: {why}")
                        return
                elif name == "readiness":
                    if ok and succ >= probe.get("successThreshold", 1) and not self.c.ready:
                        self.c.ready = True
                        self.worker.changed.set()
                    elif not ok and fail >= probe.get("failureThreshold", 3) and self.c.ready:
                        self.c.ready = False
                        self.worker.changed.set()
                elif not ok and fail >= probe.get("failureThreshold", 3):
                    self.worker.kill_container(self.c, f"Liveness probe failed: {why}")
                    return
            time.sleep(0.2)


# ---- pods --------------------------------------------------------------------------------------

class PodWorker(threading.Thread):
    def __init__(self, runner: "PodRunner", pod: Obj):
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}-{meta['name']}", daemon=True)
        self.runner, self.pod = runner, pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = runner.workdir / "pods" / self.uid
        self.log_dir = runner.workdir / "logs" / f"{self.namespace}_{self.name}_{self.uid}"
        self.changed = threading.Event()
        self.stopping = threading.Event()
        self.vanished = False
        self.ip: str | None = None
        self.hostname = (pod["spec"].get("hostname") or self.name)[:63]
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time: str | None = None
        self.initialized = False
        self.init_containers = [Container(c, True) for c in pod["spec"].get("initContainers") or []]
        self.containers = [Container(c, False) for c in pod["spec"]["containers"]]
        self.volumes: dict[str, Path] = {}
        self.last_status: str | None = None
        self.events_sent: set[tuple[str, str]] = set()
        self.lock = threading.Lock()

    # -- called from the runner's informer thread
    def update(self, pod: Obj) -> None:
        self.pod = pod
        self.changed.set()

    def gone(self) -> None:
        self.vanished = True
        self.changed.set()

    # -- helpers
    @property
    def restart_policy(self) -> str:
        return self.pod["spec"].get("restartPolicy", "Always")

    def deleting(self) -> bool:
        return self.vanished or bool(self.pod["metadata"].get("deletionTimestamp")) or self.runner.stopped.is_set()

    def check(self) -> None:
        if self.deleting():
            raise Deleting()

    def sleep(self, seconds: float) -> None:
        """Wait, waking early for pod updates; raises Deleting when the pod goes."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.changed.wait(min(left, 0.5))
            self.changed.clear()

    def port_number(self, c: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise ValueError(f"container {c.name} has no port named {port}")

    def event(self, type_: str, reason: str, message: str, c: Container | None = None) -> None:
        if (reason, message) in self.events_sent:
            return
        self.events_sent.add((reason, message))
        self.runner.post_event(self.pod, type_, reason, message, c)

    # -- status
    def status(self) -> Obj:
        conditions = []
        stamp = now()

        def cond(type_: str, ok: bool, reason: str | None = None) -> None:
            c = {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": stamp}
            if reason and not ok:
                c["reason"] = reason
            old = next((x for x in self.pod.get("status", {}).get("conditions") or [] if x["type"] == type_), None)
            if old and old.get("status") == c["status"]:
                c["lastTransitionTime"] = old.get("lastTransitionTime", stamp)
            conditions.append(c)

        terminal = self.phase in ("Succeeded", "Failed")
        all_ready = all(c.ready for c in self.containers)
        cond("PodReadyToStartContainers", self.ip is not None)
        cond("Initialized", self.initialized, "ContainersNotInitialized")
        cond("ContainersReady", all_ready and not terminal, "PodCompleted" if terminal else "ContainersNotReady")
        cond("Ready", all_ready and not terminal, "PodCompleted" if terminal else "ContainersNotReady")
        scheduled = next((x for x in self.pod.get("status", {}).get("conditions") or [] if x["type"] == "PodScheduled"), None)
        if scheduled:
            conditions.append(scheduled)
        status: Obj = {"phase": self.phase, "conditions": conditions, "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}]}
        if self.ip:
            status.update({"podIP": self.ip, "podIPs": [{"ip": self.ip}]})
        if self.start_time:
            status["startTime"] = self.start_time
        if self.reason:
            status.update({"reason": self.reason, "message": self.message})
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        status["containerStatuses"] = [c.status() for c in self.containers]
        return status

    def report(self) -> None:
        status = self.status()
        text = json.dumps(status, sort_keys=True)
        if text == self.last_status or self.vanished:
            return
        try:
            self.runner.kube.merge_patch(ns_path("/api/v1/pods", self.namespace, self.name) + "/status", {"status": status})
            self.last_status = text
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: status update failed: %s", self.namespace, self.name, exc)

    # -- lifecycle
    def run(self) -> None:
        try:
            self.lifecycle()
        except Deleting:
            pass
        except Exception as exc:  # noqa: BLE001 - a runner bug: say so in the pod's status
            log.exception("pod %s/%s: runner error", self.namespace, self.name)
            self.runner.errors.append(f"{self.namespace}/{self.name}: {exc!r}")
            self.phase, self.reason, self.message = "Failed", "PodRunnerError", f"pod runner error: {exc!r}"
            self.report()
            try:
                self.wait_deleted()
            except Deleting:
                pass
        finally:
            self.teardown()

    def wait_deleted(self) -> None:
        while True:
            self.sleep(3600)

    def reject(self, reason: str, message: str) -> None:
        self.phase, self.reason, self.message = "Failed", reason, message
        for c in self.init_containers + self.containers:
            c.state = {"waiting": {"reason": reason, "message": message}}
        self.event("Warning", reason, message)
        self.report()

    def lifecycle(self) -> None:
        if (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            self.phase = self.pod["status"]["phase"]
            self.wait_deleted()
        problems = unsupported(self.pod)
        if problems:
            self.reject("PodRunnerUnsupported", "the pod runner does not implement: " + "; ".join(problems))
            self.wait_deleted()
        self.start_time = now()
        self.ip = self.runner.ipam.allocate()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.hosts_file = self.dir / "etc-hosts"
        self.runner.network.register_hosts_file(self.uid, self.hosts_file, self.namespace,
                                                [f"{loopback_of(self.ip)}\t{self.hostname}"])
        for c in self.containers:
            c.state = {"waiting": {"reason": "PodInitializing" if self.init_containers else "ContainerCreating"}}
        self.report()
        self.volumes = self.retry(lambda sources: prepare_volumes(self.pod, sources, self.dir),
                                  self.init_containers[:1] or self.containers)
        for c in self.init_containers:
            self.run_init(c)
        self.initialized = True
        self.changed.set()
        self.run_main()

    def retry(self, fn, waiting: list[Container]):
        """fn(Sources) until it resolves; transient problems are retried, others reject the pod."""
        while True:
            self.check()
            try:
                return fn(Sources(self.runner.kube, self.namespace))
            except Unresolvable as u:
                if u.reason == "PodRunnerUnsupported":
                    self.reject(u.reason, u.message)
                    self.wait_deleted()
                for c in waiting:
                    c.state = {"waiting": {"reason": u.reason, "message": u.message}}
                self.event("Warning", "Failed" if u.reason != "FailedMount" else "FailedMount", u.message, waiting[0])
                self.report()
                self.sleep(RETRY_SECONDS if u.transient else 10)

    def plan(self, c: Container):
        services = []
        if self.pod["spec"].get("enableServiceLinks", True):
            for svc in self.runner.network.services.items():
                spec = svc.get("spec") or {}
                image = self.runner.network.service_image(spec.get("clusterIP"))
                if svc["metadata"]["namespace"] == self.namespace and image:
                    services.append((svc["metadata"]["name"], image, spec.get("ports") or []))
        service_env = service_link_env(services)
        return self.retry(lambda sources: resolve_container(
            self.pod, c.spec, self.runner.images, sources, self.volumes, self.hosts_file, self.ip, HOST_IP,
            service_env, self.hostname), [c])

    def start_container(self, c: Container) -> None:
        plan = self.plan(c)
        self.check()
        env = dict(plan.env)
        notes = []
        listen = env.get(LISTEN_ADDRESS_ENV)
        if listen in ("0.0.0.0", "::", self.ip):
            env[LISTEN_ADDRESS_ENV] = loopback_of(self.ip)
            notes.append(f"{LISTEN_ADDRESS_ENV}={listen} -> {env[LISTEN_ADDRESS_ENV]} (the pod's interface: network.py)")
        for m in plan.mounts:
            target = Path(m["target"])
            if not target.exists():
                target.mkdir(parents=True, exist_ok=True)
                self.runner.created_mount_points.add(target)
        c.instance += 1
        c.log = self.log_dir / c.name / f"{c.restart_count}.log"
        c.log.parent.mkdir(parents=True, exist_ok=True)
        c.error_file = self.dir / f"{c.name}-{c.instance}.start-error"
        c.error_file.unlink(missing_ok=True)
        spec = {"hostname": self.hostname, "mounts": plan.mounts, "readOnlyRootFilesystem": plan.read_only_root,
                "workingDir": plan.working_dir, "argv": plan.argv, "env": env, "errorFile": str(c.error_file),
                "imageRoot": str(plan.image_config.venv)}
        spec_file = self.dir / f"{c.name}-{c.instance}.json"
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(spec, fh)
        with open(c.log, "ab") as out:
            out.write(f"# pod runner: {self.namespace}/{self.name} container {c.name} (restart {c.restart_count}) "
                      f"image {plan.image} -> {plan.image_config.venv}\n# argv {plan.argv}\n".encode())
            for note in notes:
                out.write(f"# {note}\n".encode())
            out.flush()
            c.proc = subprocess.Popen([sys.executable, "-I", str(NSEXEC), str(spec_file)], stdout=out,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={}, cwd="/",
                                      start_new_session=True)
        c.image_id = "podrunner://" + str(plan.image_config.venv)
        c.container_id = "podrunner://" + hashlib.sha256(f"{self.uid}/{c.name}/{c.instance}".encode()).hexdigest()[:32]
        c.started_at = now()
        c.state = {"running": {"startedAt": c.started_at}}
        c.started = False
        c.ready = False
        c.kill_reason = None
        self.event("Normal", "Started", f"Started container {c.name}", c)
        if not c.init:
            Prober(self, c, c.instance).start()
        self.changed.set()

    def kill_container(self, c: Container, why: str, grace: float | None = None) -> None:
        """Stop one run of a container (probe failure, deletion): TERM, then KILL after the grace period."""
        proc = c.proc
        if proc is None or proc.poll() is not None:
            return
        c.kill_reason = why
        self.event("Normal", "Killing", f"Stopping container {c.name}: {why}", c)
        if grace is None:
            grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        _terminate(proc, grace)
        self.changed.set()

    def reap(self, c: Container) -> int | None:
        """If the container's process ended: record it and return its exit code."""
        if c.proc is None:
            return None
        code = c.proc.poll()
        if code is None:
            return None
        exit_code = code if code >= 0 else 128 - code
        start_error = c.error_file.read_text() if c.error_file and c.error_file.exists() else ""
        terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else ("StartError" if start_error else "Error"),
                      "startedAt": c.started_at, "finishedAt": now(), "containerID": c.container_id}
        message = start_error
        if not message and exit_code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = _log_tail(c.log)
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        c.proc = None
        c.ready = False
        if exit_code != 0:
            self.event("Warning", "BackOff" if self.restart_policy != "Never" else "Failed",
                       f"container {c.name} exited with code {exit_code}", c)
        self.changed.set()
        return exit_code

    def run_init(self, c: Container) -> None:
        while True:
            self.start_container(c)
            self.report()
            while True:
                code = self.reap(c)
                if code is not None:
                    break
                self.sleep(0.2)
            if code == 0:
                c.ready = True
                c.done = True
                self.report()
                return
            if self.restart_policy == "Never":
                self.phase = "Failed"
                for m in self.containers:
                    m.state = {"waiting": {"reason": "PodInitializing"}}
                self.report()
                self.wait_deleted()
            self.back_off(c)

    def back_off(self, c: Container) -> None:
        c.last_state = c.state
        c.restart_count += 1
        delay = c.backoff
        c.backoff = min(c.backoff * 2, BACKOFF_MAX)
        c.state = {"waiting": {"reason": "CrashLoopBackOff",
                               "message": f"back-off {int(delay)}s restarting failed container={c.name} pod={self.name}"}}
        self.report()
        self.sleep(delay)

    def run_main(self) -> None:
        for c in self.containers:
            self.start_container(c)
        self.phase = "Running"
        while True:
            for c in self.containers:
                if c.done:
                    continue
                code = self.reap(c)
                if code is None:
                    continue
                policy = self.restart_policy
                if policy == "Always" or (policy == "OnFailure" and code != 0):
                    c.last_state = c.state
                    c.restart_count += 1
                    c.next_start = time.monotonic() + c.backoff
                    c.state = {"waiting": {"reason": "CrashLoopBackOff",
                                           "message": f"back-off {int(c.backoff)}s restarting failed container={c.name} pod={self.name}"}}
                    c.backoff = min(c.backoff * 2, BACKOFF_MAX)
                else:
                    c.done = True
            for c in self.containers:
                if not c.done and c.proc is None and time.monotonic() >= c.next_start:
                    self.start_container(c)
            if all(c.done for c in self.containers):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in self.containers)
                self.phase = "Failed" if failed else "Succeeded"
                self.report()
                self.wait_deleted()
            self.report()
            self.sleep(0.3)

    def teardown(self) -> None:
        grace = 0.0 if self.vanished else float(
            self.pod["metadata"].get("deletionGracePeriodSeconds")
            or self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        if self.runner.stopped.is_set():
            grace = min(grace, 5.0)
        self.stopping.set()
        running = [c for c in self.init_containers + self.containers if c.proc is not None and c.proc.poll() is None]
        threads = [threading.Thread(target=_terminate, args=(c.proc, grace), daemon=True) for c in running]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in running:
            self.reap(c)
        self.runner.network.unregister_hosts_file(self.uid)
        self.runner.ipam.release(self.ip)
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self.vanished and not self.runner.stopped.is_set() and self.pod["metadata"].get("deletionTimestamp"):
            try:
                self.runner.kube.delete(ns_path("/api/v1/pods", self.namespace, self.name),
                                        {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}})
            except ApiException as exc:
                if exc.status not in (404, 409):
                    log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)
        self.runner.forget(self)


def _terminate(proc: subprocess.Popen, grace: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)
    # uvicorn's workers and any other stragglers in the group
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _log_tail(path: Path | None, limit: int = 2048) -> str:
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()[-limit:]
    return data.decode(errors="replace")


# ---- the runner --------------------------------------------------------------------------------

class PodRunner:
    """Start with `.start()`; `.stop()` kills every process it started and deletes the node."""

    def __init__(self, node_kube: Kube, proxy_kube: Kube, admin_kube: Kube, images: ImageStore, workdir: Path,
                 node_name: str = "runner-0", slot: int = 0):
        self.kube, self.admin, self.images, self.workdir = node_kube, admin_kube, images, Path(workdir)
        self.node_name = node_name
        self.node = NodeAgent(node_kube, node_name, {RUNNER_LABEL: "true"},
                              [{"key": RUNNER_LABEL, "value": "true", "effect": "NoSchedule"}])
        self.slot = slot
        self.network = ServiceNetwork(proxy_kube, slot)
        self.ipam = IPAM(self.network.cidr)
        self.stopped = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.finished: list[PodWorker] = []
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.created_mount_points: set[Path] = set()
        self.pods = Informer(node_kube, "/api/v1/pods", self._pod_changed,
                             query={"fieldSelector": f"spec.nodeName={node_name}"}, name="pods")

    # scheduling constraints a pod needs to land here
    @property
    def node_selector(self) -> dict[str, str]:
        return {RUNNER_LABEL: "true"}

    @property
    def tolerations(self) -> list[Obj]:
        return [{"key": RUNNER_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}]

    def start(self) -> "PodRunner":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.network.start()
        if not self.network.wait_synced(30):
            raise RuntimeError("pod runner: the Service and EndpointSlice caches did not sync in 30 s")
        self.node.register()
        self.pods.start()
        return self

    def _pod_changed(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker:
                    worker.gone()
                return
            if worker is None:
                if self.stopped.is_set():
                    return
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
            else:
                worker.update(pod)

    def forget(self, worker: PodWorker) -> None:
        with self.lock:
            if self.workers.get(worker.uid) is worker:
                del self.workers[worker.uid]
            self.finished.append(worker)

    def post_event(self, pod: Obj, type_: str, reason: str, message: str, c: Container | None) -> None:
        meta = pod["metadata"]
        stamp = now()
        involved = {"kind": "Pod", "apiVersion": "v1", "namespace": meta["namespace"], "name": meta["name"],
                    "uid": meta["uid"]}
        if c is not None:
            involved["fieldPath"] = f"spec.{'initContainers' if c.init else 'containers'}{{{c.name}}}"
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": meta["name"] + ".", "namespace": meta["namespace"]},
                 "involvedObject": involved, "reason": reason, "message": message[:1024], "type": type_,
                 "source": {"component": "kubelet", "host": self.node_name}, "firstTimestamp": stamp,
                 "lastTimestamp": stamp, "count": 1, "reportingComponent": "kubelet",
                 "reportingInstance": self.node_name}
        try:
            self.kube.create(ns_path("/api/v1/events", meta["namespace"]), event)
        except ApiException as exc:
            if exc.status not in (403, 404):
                log.debug("event not posted: %s", exc)

    # ---- for tests

    def all_workers(self) -> list[PodWorker]:
        with self.lock:
            return list(self.workers.values()) + list(self.finished)

    def logs(self, namespace: str, prefix: str = "", container: str | None = None, lines: int = 40) -> str:
        """The tail of the logs of the pods whose name starts with `prefix` (all runs of each container)."""
        out = []
        for d in sorted((self.workdir / "logs").glob(f"{namespace}_{prefix}*")):
            for f in sorted(d.glob("*/*.log"), key=lambda p: (p.parent.name, int(p.stem))):
                if container and f.parent.name != container:
                    continue
                text = f.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {d.name.rsplit('_', 1)[0]} {f.parent.name} (run {f.stem}):\n" + "\n".join(text))
        return "\n".join(out) or f"(no logs of pods {namespace}/{prefix}*)"

    def stop(self) -> None:
        self.stopped.set()
        self.pods.stop()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.changed.set()
        for w in workers:
            w.join(30)
        self.node.stop()
        self.network.stop()
        try:
            self.admin.request("DELETE", f"/api/v1/nodes/{self.node_name}", timeout=5)
        except Exception:  # noqa: BLE001 - the cluster may be gone already
            pass
        for path in sorted(self.created_mount_points, key=lambda p: -len(p.parts)):
            try:
                path.rmdir()
            except OSError:
                pass
