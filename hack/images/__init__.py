"""The operator and server images, built from the repository's Dockerfiles (standard library only).

    python -m images build     (make images) build what changed, print refs, sizes, archives
    python -m images build --all   also the tests' own: the previous MLflow's server image (previous.py), oauth2-proxy
    python -m images list      the cached images, without building

``ensure_images()`` returns ``Image`` records (ref, OCI archive path, sizes) for the tests and the
node harness, which imports the archives into the node's containerd. See build.py for the cache,
the builders (buildah or Docker) and the bases (stock python:3.11-slim-bookworm, or Debian made
here by mmdebstrap, base.py); container.py runs an image with runc, without a node.
"""
from .build import PRODUCT_IMAGES, Image, ImageBuildError, cached, ensure_images, specs

__all__ = ["PRODUCT_IMAGES", "Image", "ImageBuildError", "cached", "ensure_images", "specs"]
