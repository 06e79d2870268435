"""The `mlflow-operator` command.

    mlflow-operator render -f trackingserver.yaml [--namespace NS]   manifests the operator would apply
    mlflow-operator crd [--output DIR]                               the CRD (stdout, or DIR/<crd>.yaml)
    mlflow-operator run                                              the operator (reconciliation: later)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import __version__, yamlio
from .api import InvalidTrackingServer, load_trackingserver
from .constants import API_VERSION, KIND, MLFLOW_VERSION
from .crd import crd_yaml, write_crd
from .render import render, required_generated_secrets

EXIT_INVALID = 1


class CliError(Exception):
    pass


def _read_documents(path: str, stdin: TextIO) -> list[Any]:
    try:
        text = stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: invalid YAML: {exc}") from None


def _trackingservers(path: str, documents: list[Any], namespace: str | None, err: TextIO) -> list[dict]:
    found = []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            kind = doc.get("kind", "?") if isinstance(doc, dict) else type(doc).__name__
            print(f"{path}: skipping a {kind} (not a {KIND})", file=err)
            continue
        if doc.get("apiVersion") != API_VERSION:
            raise CliError(f"{path}: apiVersion: expected {API_VERSION}, got {doc.get('apiVersion')!r}")
        metadata = doc.setdefault("metadata", {}) if isinstance(doc.get("metadata", {}), dict) else None
        if metadata is None:
            raise CliError(f"{path}: metadata: must be a mapping")
        if namespace:
            if metadata.get("namespace", namespace) != namespace:
                raise CliError(f"{path}: metadata.namespace is {metadata['namespace']!r}, not {namespace!r}")
            metadata["namespace"] = namespace
        found.append(doc)
    if not found:
        raise CliError(f"{path}: no {KIND} found")
    return found


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    docs = _trackingservers(args.file, _read_documents(args.file, stdin), args.namespace, err)
    rendered = []
    for doc in docs:
        name = (doc.get("metadata") or {}).get("name", "?")
        try:
            ts = load_trackingserver(doc)
            manifests = render(ts)
        except InvalidTrackingServer as exc:
            details = "\n".join(f"  {e}" for e in exc.errors)
            raise CliError(f"{args.file}: {KIND} {name!r} is invalid:\n{details}") from None
        for secret in required_generated_secrets(ts):
            print(
                f"note: Secret {secret.name} ({', '.join(secret.keys)}) holds random values; the "
                "operator creates it once and it is not rendered here",
                file=err,
            )
        rendered.append((ts, manifests))
    for ts, manifests in rendered:
        for manifest in manifests:
            out.write(f"---\n# Source: {KIND} {ts.namespace}/{ts.name}\n")
            out.write(yamlio.dump(manifest, sort_keys=False, width=120))
    return 0


def cmd_crd(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    if args.output:
        path = write_crd(Path(args.output))
        print(f"wrote {path}", file=err)
    else:
        out.write(crd_yaml())
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from .controller.main import run  # Kopf is imported only by the operator itself

    return run(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlflow-operator", description="Runs MLflow tracking servers on Kubernetes.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (MLflow {MLFLOW_VERSION})")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the manifests the operator would create for a TrackingServer")
    r.add_argument("-f", "--file", required=True, help="YAML file with one or more TrackingServers ('-' for stdin)")
    r.add_argument("-n", "--namespace", help="namespace for TrackingServers that do not name one (default: default)")
    r.set_defaults(func=cmd_render)
    c = sub.add_parser("crd", help="print the CustomResourceDefinition, or write it into a directory")
    c.add_argument("-o", "--output", metavar="DIR", help="write DIR/<crd name>.yaml instead of printing")
    c.set_defaults(func=cmd_crd)
    run = sub.add_parser("run", help="run the operator (Kopf): reconcile TrackingServers in the cluster")
    from .controller.main import add_arguments

    add_arguments(run)
    run.set_defaults(func=cmd_run)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
         stdin: TextIO | None = None) -> int:
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    args = parser().parse_args(argv)
    try:
        return args.func(args, out, err, stdin)
    except CliError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INVALID


if __name__ == "__main__":
    sys.exit(main())
