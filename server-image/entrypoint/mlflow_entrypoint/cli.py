"""``mlflow-entrypoint {serve,migrate,wait-for-backend,check}``; configuration from the environment.

Exit codes: 0 success, 1 unexpected error, 2 invalid configuration, 3 database or storage problem
(unreachable, schema not at the image's revision, migration failed, artifacts not writable).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from . import __version__, db
from .config import ConfigError, load
from .redact import redact, setup_logging

log = logging.getLogger("mlflow_entrypoint")


def _mlflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlflow")
    except PackageNotFoundError:
        return "not installed"


def cmd_serve(args) -> int:
    from .serve import serve

    serve(load())
    return 0  # not reached: serve execs mlflow


def cmd_migrate(args) -> int:
    s = load(for_serving=False)
    if not s.database_uris:
        print("migrate: this configuration has no database (artifacts-only); nothing to do")
        return 0
    for kind, uri in s.database_uris:
        where = db.describe(uri)
        db.wait_for(uri, s.backend_wait_seconds)
        print(f"migrate: {kind} database {where}: waiting for the migration lock", flush=True)
        before, after = db.migrate(uri, kind)
        setup_logging()  # MLflow/alembic imports install their own handlers
        if before.state == "current":
            print(f"migrate: {kind} database {where}: revision {before.current} is the image's head; nothing to do")
        else:
            print(
                f"migrate: {kind} database {where}: revision before {before.current or '(empty)'}, "
                f"after {after.current} (migrated)"
            )
    return 0


def cmd_wait(args) -> int:
    s = load(for_serving=False)
    for kind, uri in s.database_uris:
        attempts = db.wait_for(uri, s.backend_wait_seconds)
        print(f"wait-for-backend: {kind} database {db.describe(uri)} answered (attempt {attempts})")
    return 0


def cmd_check(args) -> int:
    if args.init:
        from .stores import run_init_check, summary, write_termination_message

        report = run_init_check(load())
        print(json.dumps(report, indent=2, sort_keys=True))
        print(f"mlflow-entrypoint check: {summary(report)}", file=sys.stderr)
        if args.termination_message:
            write_termination_message(args.termination_message, report)
        return 0 if report["ok"] else 3
    from .check import run_check

    report = run_check(load())
    print(json.dumps(report, indent=2, sort_keys=True))
    return 0 if report["ok"] else 3


def cmd_probe(args) -> int:
    """The kubelet's exec probe of a server that listens on loopback (behind the OIDC sidecar)."""
    import os
    import urllib.request

    host = os.environ.get("MLFLOW_OPERATOR_HOST") or "127.0.0.1"
    port = os.environ.get("MLFLOW_OPERATOR_PORT") or "5000"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{args.path}", timeout=args.timeout) as answer:
            return 0 if answer.status == 200 else 1
    except Exception as e:
        print(f"mlflow-entrypoint probe: {args.path}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlflow-entrypoint",
        description="Entrypoint of the mlflow-operator server image. Configured by MLFLOW_OPERATOR_* env vars.",
    )
    parser.add_argument("--version", action="version", version=f"mlflow-entrypoint {__version__} (mlflow {_mlflow_version()})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="check the database schema, then exec `mlflow server`").set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="upgrade the databases to the image's schema, under a lock").set_defaults(fn=cmd_migrate)
    sub.add_parser("wait-for-backend", help="wait (bounded) until the databases answer").set_defaults(fn=cmd_wait)
    check = sub.add_parser("check", help="JSON report: databases reachable and migrated, artifacts writable")
    check.add_argument("--init", action="store_true",
                       help="the pod's init container: connect to every store (bounded retries, "
                            "MLFLOW_OPERATOR_BACKEND_WAIT_SECONDS), list the artifact store, write nothing; "
                            "exit 3 when a store cannot be reached")
    check.add_argument("--termination-message", metavar="PATH",
                       help="also write the result where the kubelet reads the termination message")
    check.set_defaults(fn=cmd_check)
    probe = sub.add_parser("probe", help="GET a path of this container's server (exit 0 on 200): an exec probe")
    probe.add_argument("path", nargs="?", default="/health")
    probe.add_argument("--timeout", type=float, default=5.0)
    probe.set_defaults(fn=cmd_probe)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"mlflow-entrypoint {args.command}: {redact(e)}", file=sys.stderr)
        return 2
    except db.BackendError as e:
        print(f"mlflow-entrypoint {args.command}: {redact(e)}", file=sys.stderr)
        return 3
    except Exception as e:  # the last line of defence: still no password in the message
        print(f"mlflow-entrypoint {args.command}: unexpected {type(e).__name__}: {redact(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
