"""make images: build both images if their inputs changed, print what there is.

    python -m images build [NAME...]   build what changed; print ref, size, archive
    python -m images build --all       also the images only the tests use (server-previous, oauth2-proxy)
    python -m images list  [NAME...]   what is cached, without building
    python -m images load              build, then import both into the real node of the cluster
                                       `hack/cluster up --node` started (exit 3: there is none, or
                                       KUBECONFIG names another cluster)

NAME: operator, server (the default: both), oauth2-proxy (the OIDC sidecar of the node tier, from the
binary built here) or server-previous (the server image of the MLflow
release before the pinned one, for the upgrade test).
"""
from __future__ import annotations

import argparse
import sys
import time

from .base import BaseImageError
from .build import ImageBuildError, cached, ensure_images, specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    parser.add_argument("command", choices=("build", "list", "load"))
    parser.add_argument("names", nargs="*", metavar="NAME", help="operator and/or server (default: both)")
    parser.add_argument("--all", action="store_true", help="every image, the tests' own included")
    args = parser.parse_args(argv)
    names = tuple(args.names) or tuple(n for n, spec in specs().items() if args.all or not spec.test_only)
    unknown = set(names) - set(specs())
    if unknown:
        parser.error(f"unknown image {', '.join(sorted(unknown))}; known: {', '.join(specs())}")
    if args.command == "list":
        for name in names:
            image = cached(name)
            print(image.describe() if image else f"{name}: not built (make images)")
        return 0
    cluster = None
    if args.command == "load":
        cluster = _local_node_cluster()
        if cluster is None:
            return 3
    started = time.monotonic()
    try:
        images = ensure_images(names)
    except (ImageBuildError, BaseImageError) as e:
        print(f"images: {e}", file=sys.stderr)
        return 1
    for image in images.values():
        print(image.describe())
    print(f"images: ready in {time.monotonic() - started:.1f} s")
    if cluster is not None:
        for image in images.values():
            cluster.load_image(image.archive)
            print(f"images: {image.ref} imported into the node's containerd")
    return 0


def _local_node_cluster():
    """The cluster `hack/cluster up --node` started, if KUBECONFIG names it; else None (said why)."""
    import json
    import os
    import subprocess

    from localcluster.__main__ import state_file
    from localcluster.cluster import Cluster

    try:
        cluster = Cluster.from_state(json.loads(state_file().read_text()))
    except (FileNotFoundError, ValueError, KeyError):
        print("images: no cluster started by `hack/cluster up --node`", file=sys.stderr)
        return None
    if getattr(cluster, "node", None) is None:
        print("images: the cluster `hack/cluster up` started has no real node (use --node)", file=sys.stderr)
        return None
    current = subprocess.run(
        [str(cluster.kubectl_path()), "config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"],
        capture_output=True, text=True, env=dict(os.environ),
    ).stdout.strip()
    if current and current != cluster.server:
        print(f"images: KUBECONFIG names {current}, not the local cluster ({cluster.server})", file=sys.stderr)
        return None
    return cluster


if __name__ == "__main__":
    sys.exit(main())
