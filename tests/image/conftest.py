"""Fixtures of the image tests: podman with the project's own storage, and the image built from this
tree (deploy/image/build.py; seconds when `make image` ran before, a few minutes from cold).

These tests are not part of `make test` (it passes --ignore=tests/image): they need root, podman,
runc and debootstrap, and a cold build takes minutes. `make image-test` runs them, and CI runs that.
A missing tool or a failed build is a test failure with the reason, never a skip."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from deploy.image import build


@pytest.fixture(scope="session")
def podman() -> build.Podman:
    try:
        build.ensure_tools(install=False)
    except build.ImageBuildError as exc:
        pytest.fail(f"the image tests cannot run: {exc}", pytrace=False)
    return build.Podman()


@pytest.fixture(scope="session")
def image(podman: build.Podman) -> str:
    try:
        return build.build().image
    except build.ImageBuildError as exc:
        pytest.fail(f"the image did not build: {exc}", pytrace=False)


@pytest.fixture
def container_name(podman: build.Podman) -> Iterator[str]:
    """A unique container name; the container is removed at the end whatever happened."""
    name = f"tf-image-test-{uuid.uuid4().hex[:10]}"
    yield name
    podman.run("rm", "--force", "--time", "0", name, check=False, timeout=60)
