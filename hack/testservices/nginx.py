"""A real NGINX (Debian's /usr/sbin/nginx) with a generated config, on 127.0.0.1.

The config is the shape the operator renders for an Ingress in front of MLflow: path-prefix routes
to upstreams (split mode sends the artifact API to the artifacts-only server), no body-size limit or
a given one, streaming (no request/response buffering) and long timeouts for large artifacts.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import ServiceError
from ._util import die_with_parent, disowned, free_port, owned, stop, tail, wait_port
from .postgres import _demote

NGINX = Path("/usr/sbin/nginx")

# The artifact API paths MLflow clients use (REST and the UI's ajax variant).
ARTIFACT_PREFIXES = ("/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/mlflow-artifacts/")


def render_config(
    port: int, workdir: Path, default_upstream: int, routes: dict[str, int] | None = None,
    client_max_body_size: str = "0", timeout_seconds: int = 600,
) -> str:
    locations = []
    for prefix, upstream in sorted((routes or {}).items(), key=lambda kv: -len(kv[0])):
        locations.append(f"    location {prefix} {{ proxy_pass http://127.0.0.1:{upstream}; }}")
    locations.append(f"    location / {{ proxy_pass http://127.0.0.1:{default_upstream}; }}")
    loc = "\n".join(locations)
    return f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    client_max_body_size {client_max_body_size};
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_connect_timeout 10s;
    proxy_read_timeout {timeout_seconds}s;
    proxy_send_timeout {timeout_seconds}s;
    server {{
    listen 127.0.0.1:{port};
{loc}
    }}
}}
"""


class Nginx:
    def __init__(self, default_upstream: int, routes: dict[str, int] | None = None, **kw):
        if not NGINX.exists():
            raise ServiceError("NGINX is not installed (/usr/sbin/nginx); run hack/system-deps (nginx-light)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mlflow-op-nginx-"))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(render_config(self.port, self.dir, default_upstream, routes, **kw))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        demote = _demote()
        if demote:
            os.chown(self.dir, demote["user"], demote["group"])
        log = self.dir / "stderr.log"
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                [str(NGINX), "-c", str(self.conf), "-e", str(self.dir / "error.log"), "-p", str(self.dir)],
                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, **demote,
                preexec_fn=die_with_parent(),
            )
        owned(self)
        try:
            wait_port(self.port, 15, self.proc, "nginx", log)
        except ServiceError as e:
            raise ServiceError(str(e) + tail(self.dir / "error.log")) from None
        return self

    def stop(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        disowned(self)
