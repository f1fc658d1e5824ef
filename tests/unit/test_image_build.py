"""deploy/image/build.py without podman: what it asks for when something is missing, its podman
configuration, and the key that caches the stand-in base. (`make image-test` builds and runs the
image itself: tests/image.)"""

from __future__ import annotations

import resource

import pytest

from deploy.image import build


def test_missing_tools_fail_naming_the_debian_packages(monkeypatch):
    monkeypatch.setattr(build, "_which", lambda command: None if command in ("podman", "runc") else "/bin/x")
    with pytest.raises(build.ImageBuildError) as failure:
        build.ensure_tools(install=False)
    message = str(failure.value)
    assert "podman, runc" in message
    assert "apt-get install --no-install-recommends podman runc" in message


def test_missing_tools_are_not_installed_without_root(monkeypatch):
    monkeypatch.setattr(build, "_which", lambda command: None if command == "debootstrap" else "/bin/x")
    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    ran: list[list[str]] = []
    monkeypatch.setattr(build.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    with pytest.raises(build.ImageBuildError, match=r"debootstrap.*run as root"):
        build.ensure_tools(install=True)
    assert ran == []


def test_not_root_is_a_failure_that_says_so(monkeypatch):
    monkeypatch.setattr(build, "_which", lambda command: "/bin/x")
    monkeypatch.setattr(build.os, "geteuid", lambda: 1000)
    with pytest.raises(build.ImageBuildError, match="need root"):
        build.ensure_tools()


def test_podman_configuration_is_the_projects_own(tmp_path):
    podman = build.Podman(root=tmp_path / "podman", run_root=tmp_path / "run")
    env = podman.env()
    assert set(env) == {"CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"}
    containers = podman.containers_conf.read_text()
    storage = podman.storage_conf.read_text()
    assert 'runtime = "runc"' in containers and 'netns = "host"' in containers
    assert f'graphroot = "{tmp_path / "podman" / "storage"}"' in storage
    assert f'runroot = "{tmp_path / "run" / "storage"}"' in storage
    hard_nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    (nofile,) = [line for line in containers.splitlines() if line.startswith("default_ulimits")]
    limit = int(nofile.split("nofile=")[1].split(":")[0])
    assert limit <= 65536 and (hard_nofile == resource.RLIM_INFINITY or limit <= hard_nofile)


def test_the_base_key_follows_what_the_base_is_made_of(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "HOST_CA_DIR", tmp_path)
    key = build.base_key()
    assert build.base_key() == key
    assert build.base_key((*build.BASE_PACKAGES, "curl")) != key
    assert build.base_key(suite="trixie") != key
    (tmp_path / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert build.base_key() != key
    assert build.base_tag().startswith("localhost/tf-base:bookworm-")


def test_a_partial_root_with_mounts_left_is_not_removed(monkeypatch, tmp_path):
    partial = tmp_path / "rootfs"
    (partial / "proc").mkdir(parents=True)
    monkeypatch.setattr(build, "_mounts_below", lambda path: [str(partial / "proc")])
    monkeypatch.setattr(build.subprocess, "run", lambda *a, **kw: None)  # the umount "fails"
    with pytest.raises(build.ImageBuildError, match="still holds mounts"):
        build._remove_tree(partial)
    assert partial.is_dir()
    monkeypatch.undo()
    build._remove_tree(partial)
    assert not partial.exists()
