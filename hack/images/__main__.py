"""make images: build both images if their inputs changed, print what there is."""
from __future__ import annotations

import argparse
import sys
import time

from .base import BaseImageError
from .build import ImageBuildError, cached, ensure_images, specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images", description=__doc__)
    parser.add_argument("command", choices=("build", "list"))
    parser.add_argument("names", nargs="*", metavar="NAME", help="operator and/or server (default: both)")
    args = parser.parse_args(argv)
    names = tuple(args.names) or tuple(specs())
    unknown = set(names) - set(specs())
    if unknown:
        parser.error(f"unknown image {', '.join(sorted(unknown))}; known: {', '.join(specs())}")
    if args.command == "list":
        for name in names:
            image = cached(name)
            print(image.describe() if image else f"{name}: not built (make images)")
        return 0
    started = time.monotonic()
    try:
        images = ensure_images(names)
    except (ImageBuildError, BaseImageError) as e:
        print(f"images: {e}", file=sys.stderr)
        return 1
    for image in images.values():
        print(image.describe())
    print(f"images: ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
