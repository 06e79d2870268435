"""Images the runner can run: our server image, as the virtualenv built for its MLflow version.

There is no container runtime and no registry here, so "pulling" `ghcr.io/mlflow-operator/mlflow-server:X`
means finding the server virtualenv built for MLflow X (server-image/install.sh, the script the Dockerfile
runs). The image's configuration (ENV, WORKDIR, ENTRYPOINT, CMD, USER) is read from the final stage of
server-image/Dockerfile, so the runner cannot drift from what the image would do. The one mapping: the
image's `/opt/mlflow` (where the Dockerfile installs the virtualenv) is the cached virtualenv's path.
Anything else is refused: no guessing at what an unknown image would contain.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "server-image" / "Dockerfile"
IMAGE_VENV = "/opt/mlflow"  # where the Dockerfile puts the virtualenv (`COPY --from=build /opt/mlflow /opt/mlflow`)
# The base image's own config (python:3.11-slim-bookworm): what `$PATH` means in the Dockerfile's ENV.
# The image's listen address setting (the env contract): what "all interfaces" is for a pod (kubelet.py).
LISTEN_ADDRESS_ENV = "MLFLOW_OPERATOR_HOST"
BASE_ENV = {"PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class ImageConfig:
    """What `docker inspect` would show of the image (the parts a pod uses)."""

    env: dict[str, str]
    workdir: str
    entrypoint: list[str]
    cmd: list[str]
    user: str | None
    venv: Path
    labels: dict[str, str] = field(default_factory=dict)


def _instructions(text: str) -> list[tuple[str, str]]:
    joined, buf = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    if buf:
        joined.append(buf)
    out = []
    for line in joined:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _expand(value: str, env: dict[str, str], args: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        return env.get(name, args.get(name, ""))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", sub, value)


def image_config(venv: Path, dockerfile: Path = DOCKERFILE) -> ImageConfig:
    """The final stage of the Dockerfile, with `/opt/mlflow` meaning `venv`."""
    steps = _instructions(dockerfile.read_text())
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    env, args = dict(BASE_ENV), {}
    workdir, entrypoint, cmd, user, copied = "/", [], [], None, False
    for word, rest in steps[last_from + 1:]:
        if word == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif word == "ENV":
            parts = shlex.split(rest)
            if parts and "=" not in parts[0]:
                parts = [f"{parts[0]}={' '.join(parts[1:])}"]
            for part in parts:
                name, _, value = part.partition("=")
                env[name] = _expand(value, env, args)
        elif word == "WORKDIR":
            workdir = _expand(rest, env, args)
        elif word == "USER":
            user = _expand(rest, env, args)
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                value = json.loads(rest)
            except json.JSONDecodeError:
                raise ImageError(f"{dockerfile}: {word} must use the exec (JSON) form, got {rest!r}") from None
            if word == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
        elif word == "COPY" and rest.split()[-1] == IMAGE_VENV:
            copied = True
    if not copied:
        raise ImageError(f"{dockerfile}: the final stage does not COPY the virtualenv to {IMAGE_VENV}; "
                         "the runner's image mapping must be updated")
    env = {k: v.replace(IMAGE_VENV, str(venv)) for k, v in env.items()}
    return ImageConfig(env=env, workdir=workdir, entrypoint=entrypoint, cmd=cmd, user=user, venv=venv)


class ImageStore:
    """image reference -> ImageConfig. Only references registered here can run."""

    def __init__(self) -> None:
        self._images: dict[str, ImageConfig] = {}

    def add(self, reference: str, venv: Path) -> None:
        self._images[reference] = image_config(Path(venv))

    def get(self, reference: str) -> ImageConfig:
        try:
            return self._images[reference]
        except KeyError:
            known = ", ".join(sorted(self._images)) or "none"
            raise ImageError(
                f"pod runner: no virtualenv stands in for image {reference!r} (known images: {known})"
            ) from None

    def __contains__(self, reference: str) -> bool:
        return reference in self._images

    def references(self) -> list[str]:
        return sorted(self._images)
