"""pytest fixture ``built_images`` (session): the operator and server images, built if their inputs
changed (a warm cache builds nothing), as ``{"operator": Image, "server": Image}``.

Registered in tests/conftest.py. When an image cannot be built the tests using it FAIL with the
reason (they are never skipped). `make test` runs `make images` first, so a cold build is not cut
short by a test's timeout.
"""
from __future__ import annotations

import pytest

from .base import BaseImageError
from .build import Image, ImageBuildError, ensure_images


@pytest.fixture(scope="session")
def built_images(request: pytest.FixtureRequest) -> dict[str, Image]:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    try:
        with capture.global_and_fixture_disabled() if capture else _nothing():
            return ensure_images()
    except (ImageBuildError, BaseImageError) as e:
        pytest.fail(f"the images could not be built: {e}", pytrace=False)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None
