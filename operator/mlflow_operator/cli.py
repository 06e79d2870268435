"""The `mlflow-operator` command.

    mlflow-operator render -f FILE|DIR [-f ...] [-R] [--namespace NS] [--class FILE|DIR ...]
                                                                     manifests the operator would apply
    mlflow-operator crd [--output DIR]                               the CRD (stdout, or DIR/<crd>.yaml)
    mlflow-operator run                                              the operator (reconciliation: later)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from . import __version__, yamlio
from .api import InvalidTrackingServer, TrackingServerClass, load_trackingserver, load_trackingserverclass
from .constants import API_VERSION, CLASS_KIND, DEFAULT_CLUSTER_DOMAIN, DEFAULT_IMAGE, KIND, MLFLOW_VERSION
from .crd import all_crds_yaml, trackingserver_schema, write_crd
from .render import RenderContext, render, required_generated_secrets
from .render.classes import apply_class, class_name_for

EXIT_INVALID = 1
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command killed by SIGPIPE


class CliError(Exception):
    pass


# What kubectl apply -f <directory> reads from a directory.
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _expand_paths(paths: list[str], recursive: bool) -> list[str]:
    """Files named on the command line, and the manifests in each directory (like kubectl: sorted,
    by suffix; subdirectories only with --recursive)."""
    files: list[str] = []
    for path in paths:
        p = Path(path)
        if path != "-" and p.is_dir():
            pattern = "**/*" if recursive else "*"
            found = sorted(str(f) for f in p.glob(pattern) if f.is_file() and f.suffix in MANIFEST_SUFFIXES)
            if not found:
                raise CliError(f"{path}: no {', '.join(MANIFEST_SUFFIXES)} files in this directory")
            files += found
        else:
            files.append(path)
    return files


def _yaml_error(path: str, exc: yaml.YAMLError) -> str:
    """file:line:column and the parser's own words (PyYAML names the string '<unicode string>')."""
    mark, context_mark = getattr(exc, "problem_mark", None), getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
    message = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    if context and context_mark:
        message += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    elif context:
        message += f" ({context})"
    return f"{where}: invalid YAML: {message}"


def _read_documents(path: str, stdin: TextIO) -> list[Any]:
    try:
        text = stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CliError(_yaml_error(path, exc)) from None


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


def _classes(paths: list[str], recursive: bool, stdin: TextIO) -> dict[str, TrackingServerClass]:
    """The TrackingServerClasses of the --class files (other kinds in them are ignored)."""
    classes: dict[str, TrackingServerClass] = {}
    errors = []
    for path in _expand_paths(paths, recursive):
        for doc in _read_documents(path, stdin):
            if not isinstance(doc, dict) or doc.get("kind") != CLASS_KIND:
                continue
            name = (doc.get("metadata") or {}).get("name", "?")
            try:
                cls = load_trackingserverclass(doc)
            except InvalidTrackingServer as exc:
                details = "\n".join(f"  {e}" for e in exc.errors)
                errors.append(f"{path}: {CLASS_KIND} {name!r} is invalid:\n{details}")
                continue
            classes[cls.name] = cls
    if errors:
        raise CliError("\nerror: ".join(errors))
    return classes


def _trackingservers(path: str, documents: list[Any], namespace: str | None, err: TextIO) -> list[dict]:
    found = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == CLASS_KIND:
            continue  # read with --class
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            kind = str(doc.get("kind", "document without a kind")) if isinstance(doc, dict) else type(doc).__name__
            print(f"{path}: skipping {_article(kind)} {kind} (not a {KIND})", file=err)
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
        elif not metadata.get("namespace"):
            print(f"{path}: note: {KIND} {metadata.get('name', '?')!r} names no namespace; rendered in "
                  f"namespace 'default' (kubectl apply would use your context's namespace; -n sets one)", file=err)
        found.append(doc)
    return found


def _with_class(path: str, doc: dict, classes: dict[str, TrackingServerClass], err: TextIO) -> tuple[dict, str]:
    """The TrackingServer under its class, as the operator runs it, and how to name it in errors."""
    name = (doc.get("metadata") or {}).get("name", "?")
    class_name = class_name_for(doc, classes.values())
    if class_name is None:
        return doc, f"{KIND} {name!r}"
    if class_name not in classes:
        raise CliError(f"{path}: {KIND} {name!r} names {CLASS_KIND} {class_name!r}, which no --class file holds")
    # The TrackingServer's own rules first, in its own words; then the spec the class makes.
    load_trackingserver(doc)
    result = apply_class(doc, classes[class_name], trackingserver_schema()["properties"]["spec"])
    for field in result.overridden:
        print(f"{path}: note: {KIND} {name!r}: spec.{field} is enforced by {CLASS_KIND} {class_name!r}; "
              "the class's value applies, the spec's is ignored", file=err)
    return result.body, f"{KIND} {name!r} with {CLASS_KIND} {class_name!r}"


def _render_file(path: str, namespace: str | None, context: RenderContext, stdin: TextIO,
                 err: TextIO, classes: dict[str, TrackingServerClass]) -> list[tuple[Any, list]]:
    rendered = []
    for doc in _trackingservers(path, _read_documents(path, stdin), namespace, err):
        name = (doc.get("metadata") or {}).get("name", "?")
        what = f"{KIND} {name!r}"
        try:
            doc, what = _with_class(path, doc, classes, err)
            ts = load_trackingserver(doc)
            manifests = render(ts, context)
        except InvalidTrackingServer as exc:
            details = "\n".join(f"  {e}" for e in exc.errors)
            raise CliError(f"{path}: {what} is invalid:\n{details}") from None
        for secret in required_generated_secrets(ts):
            print(
                f"note: Secret {secret.name} ({', '.join(secret.keys)}) holds random values; the "
                "operator creates it once and it is not rendered here",
                file=err,
            )
        rendered.append((ts, manifests))
    return rendered


def cmd_render(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Every file is read and checked before anything is printed: a review never sees half a result."""
    rendered, errors = [], []
    files = _expand_paths(args.file, args.recursive)
    context = RenderContext(default_image=args.default_image, cluster_domain=args.cluster_domain)
    classes = _classes(args.classes, args.recursive, stdin) if args.classes else {}
    for path in files:
        try:
            rendered += _render_file(path, args.namespace, context, stdin, err, classes)
        except CliError as exc:
            errors.append(str(exc))
    if errors:
        raise CliError("\nerror: ".join(errors))
    if not rendered:
        raise CliError(f"{', '.join(files)}: no {KIND} found")
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
        out.write(all_crds_yaml())
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    from .controller.main import run  # Kopf is imported only by the operator itself

    return run(args)


def parser() -> argparse.ArgumentParser:
    from .controller.main import add_arguments, default_image  # one rule for the operator and render

    p = argparse.ArgumentParser(prog="mlflow-operator", description="Runs MLflow tracking servers on Kubernetes.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (MLflow {MLFLOW_VERSION})")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="print the manifests the operator would create for a TrackingServer")
    r.add_argument("-f", "--file", required=True, action="append",
                   help="YAML file with one or more TrackingServers, a directory of them, or '-' for stdin (repeatable)")
    r.add_argument("-R", "--recursive", action="store_true", help="also read the subdirectories of a directory")
    r.add_argument("-n", "--namespace", help="namespace for TrackingServers that do not name one (default: default)")
    r.add_argument("--class", dest="classes", action="append", default=[], metavar="FILE|DIR",
                   help="TrackingServerClasses (a file or directory, repeatable): each TrackingServer is rendered "
                   "under the class it names (spec.className), or the one annotated as the default")
    r.add_argument("--default-image", default=DEFAULT_IMAGE, type=default_image,
                   help="as the operator's --default-image: the image of a TrackingServer without spec.image")
    r.add_argument("--cluster-domain", default=DEFAULT_CLUSTER_DOMAIN, help="as the operator's --cluster-domain")
    r.set_defaults(func=cmd_render)
    c = sub.add_parser("crd", help="print the CustomResourceDefinitions, or write them into a directory")
    c.add_argument("-o", "--output", metavar="DIR", help="write DIR/<crd name>.yaml instead of printing")
    c.set_defaults(func=cmd_crd)
    run = sub.add_parser("run", help="run the operator (Kopf): reconcile TrackingServers in the cluster")
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
    except BrokenPipeError:
        # The reader went away (`render ... | head`): not an error of ours. Python would print a
        # second BrokenPipeError when it flushes stdout at exit, so stdout goes to /dev/null first.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
