#!/usr/bin/env bash
# Installs the server image's Python environment into a virtualenv. The Dockerfile and the test setup
# (hack/testservices) both run this script, so the image and the tests cannot drift apart.
#
#   server-image/install.sh VENV                    # venv + pinned requirements + entrypoint
#   server-image/install.sh --entrypoint-only VENV  # (re)install only the entrypoint package
#   server-image/install.sh --requirements-only VENV  # venv + pinned requirements (an image layer)
#
# The venv has no pip of its own: the invoking interpreter's pip installs into it (pip --python),
# which keeps ~20 MB of installer out of the image. Env: PYTHON (default python3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
only_entrypoint=false
only_requirements=false
if [ "${1:-}" = "--entrypoint-only" ]; then only_entrypoint=true; shift; fi
if [ "${1:-}" = "--requirements-only" ]; then only_requirements=true; shift; fi
venv=${1:?usage: install.sh [--entrypoint-only] VENV}
pip=("$py" -m pip --python "$venv/bin/python" install --no-cache-dir --disable-pip-version-check -q)

if [ "$only_entrypoint" = false ]; then
  "$py" -m venv --without-pip "$venv"
  # --no-deps: the lock is complete; MLflow's own declared dependencies are deliberately not
  # installed (see requirements.in). Byte-code is compiled at install time (pip's default) so a
  # read-only container does not recompile every module on each start.
  "${pip[@]}" --no-deps -r "$here/requirements.lock"
fi
if [ "$only_requirements" = true ]; then exit 0; fi
# Built from a copy: an in-tree build would leave build/ and *.egg-info in the source tree.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$here/entrypoint/." "$src/"
rm -rf "$src"/build "$src"/*.egg-info
"${pip[@]}" --no-deps --force-reinstall "$src"
"$venv/bin/mlflow-entrypoint" --version
