"""Builds the training-filter container image with podman, here, without any image registry.

    python -m deploy.image.build                  # `make image`: the stand-in base (cached), then the image
    python -m deploy.image.build --install-tools  # first apt-get install podman, runc, debootstrap if missing
    eval "$(python -m deploy.image.build --env)"  # then plain `podman ...` uses the same storage

No registry is reachable from this machine, so the Dockerfile's default base
(python:3.11.7-slim-bookworm) cannot be pulled. Instead a stand-in Debian bookworm base is made with
debootstrap from Debian's own packages (Python 3.11 with its headers, venv, ca-certificates), imported
into podman as `localhost/tf-base:bookworm-<key>` and passed to the Dockerfile as `--build-arg BASE=...`.
The key is a hash of the recipe, suite, mirror, packages and the host's extra CA certificates, so the base
is made once and re-made only when one of them changes; the podman image itself is the cache.

The host's locally added CA certificates (/usr/local/share/ca-certificates) are copied into the base
so that pip inside the build can reach PyPI through a TLS-intercepting proxy; the stand-in base and the
image built on it are therefore for tests on this machine, not for a registry.

podman runs rootful with a configuration of its own, written under ~/.cache/training-filter/podman:
storage (overlay) in that folder and its run state in a temporary folder (CONTAINERS_STORAGE_CONF),
runtime runc, cgroupfs, file events, ulimits no higher than this host's hard limits and the host's
network namespace by default (CONTAINERS_CONF). No bridge network or firewall rule is created, and the
system's own podman storage and configuration are not used. The one file written outside these folders:
podman 4.3's build keeps its blob-info cache (a small digest index) in /var/lib/containers/cache, and no
setting moves it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "training-filter"

IMAGE = "localhost/training-filter:dev"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# What the stand-in base holds, like the official python:3.11-slim-bookworm: an interpreter with its
# headers (libpython3.11-dev, for the Cython build), venv with ensurepip, `python`, and CA certificates.
# python3-distutils is named because debootstrap does not resolve virtual packages: it provides the
# python3.11-distutils that python3.11-venv depends on. gcc is not included: the Dockerfile's build
# stage installs it with apt from Debian's mirror, as it does on the official base.
BASE_PACKAGES = (
    "python3.11",
    "python3.11-venv",
    "python3-distutils",
    "libpython3.11-dev",
    "python-is-python3",
    "ca-certificates",
)
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
# Bumped whenever how the base is made changes (so a cached base made the old way is not used).
BASE_RECIPE = 2
# command -> the Debian package that provides it
TOOLS = {"podman": "podman", "runc": "runc", "debootstrap": "debootstrap"}
_SBIN = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])

DEBOOTSTRAP_TIMEOUT = 1200.0
BUILD_TIMEOUT = 1800.0


class ImageBuildError(RuntimeError):
    """A prerequisite is missing or a step failed. The message says which and what to do."""


def _which(command: str) -> str | None:
    return shutil.which(command, path=os.pathsep.join([os.environ.get("PATH", ""), _SBIN]))


def missing_packages() -> list[str]:
    """The Debian packages whose commands the image build and the image tests need and cannot find."""
    return sorted({package for command, package in TOOLS.items() if _which(command) is None})


def ensure_tools(install: bool = False) -> None:
    """Fails with the package names when podman, runc or debootstrap is missing; with `install` (and
    as root) installs them with apt first."""
    missing = missing_packages()
    if missing and install and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        ):
            print(f"image: {' '.join(cmd)}", file=sys.stderr, flush=True)
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
            if result.returncode != 0:
                raise ImageBuildError(f"{' '.join(cmd)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        missing = missing_packages()
    if missing:
        how = "run as root so it installs them" if install else "or run `make image` as root, which installs them"
        raise ImageBuildError(
            f"the image build and the image tests need the Debian packages {', '.join(missing)}: "
            f"apt-get install --no-install-recommends {' '.join(missing)} ({how})"
        )
    if os.geteuid() != 0:
        raise ImageBuildError(
            "the image build and the image tests run podman rootful and debootstrap, which need root "
            f"(running as uid {os.geteuid()})"
        )


def _ulimit(resource_id: int, ceiling: int) -> int:
    """A container ulimit no higher than this host's hard limit (podman's defaults are higher than this
    machine allows, and then no container starts)."""
    hard = resource.getrlimit(resource_id)[1]
    return ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)


@dataclass
class Podman:
    """podman with the project's own storage and configuration (see the module docstring)."""

    root: Path = field(default_factory=lambda: CACHE_DIR / "podman")
    run_root: Path = field(
        default_factory=lambda: Path(tempfile.gettempdir()) / f"training-filter-podman-{os.geteuid()}"
    )

    @property
    def containers_conf(self) -> Path:
        return self.root / "containers.conf"

    @property
    def storage_conf(self) -> Path:
        return self.root / "storage.conf"

    def env(self) -> dict[str, str]:
        """The environment variables that point podman at this configuration (written on first use)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.run_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        nofile = _ulimit(resource.RLIMIT_NOFILE, 65536)
        nproc = _ulimit(resource.RLIMIT_NPROC, 32768)
        containers = (
            "# Written by deploy/image/build.py: training-filter's own podman configuration.\n"
            "[containers]\n"
            f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
            "# The host network namespace by default: no bridge, no firewall rules, nothing system-wide.\n"
            'netns = "host"\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'tmp_dir = "{self.run_root / "libpod"}"\n'
        )
        storage = (
            "# Written by deploy/image/build.py: training-filter's own podman storage.\n"
            "[storage]\n"
            'driver = "overlay"\n'
            f'graphroot = "{self.root / "storage"}"\n'
            f'runroot = "{self.run_root / "storage"}"\n'
        )
        for path, text in ((self.containers_conf, containers), (self.storage_conf, storage)):
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
        return {"CONTAINERS_CONF": str(self.containers_conf), "CONTAINERS_STORAGE_CONF": str(self.storage_conf)}

    def command(self, *args: str) -> list[str]:
        podman = _which("podman")
        if podman is None:
            raise ImageBuildError("podman is not installed: apt-get install --no-install-recommends podman runc")
        return [podman, *args]

    def run(
        self,
        *args: str,
        timeout: float = 120.0,
        check: bool = True,
        input: bytes | None = None,
        stream: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Runs `podman ARGS` and waits at most `timeout` seconds. With `stream` its output goes to this
        process's stdout and stderr instead of being captured."""
        cmd = self.command(*args)
        out = None if stream else subprocess.PIPE
        result = subprocess.run(
            cmd,
            env={**os.environ, **self.env()},
            input=input,
            stdout=out,
            stderr=out,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise ImageBuildError(
                f"{shlex.join(cmd)} exited with {result.returncode}:\n"
                f"{(result.stdout or b'')[-3000:].decode(errors='replace')}\n"
                f"{(result.stderr or b'')[-3000:].decode(errors='replace')}"
            )
        return result

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        out = self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout
        return int(out.decode().strip())

    def inspect(self, ref: str, kind: str = "image") -> dict:
        return json.loads(self.run(kind, "inspect", ref).stdout)[0]


def _host_cas() -> list[Path]:
    return sorted(p for p in HOST_CA_DIR.rglob("*.crt") if p.is_file()) if HOST_CA_DIR.is_dir() else []


def base_key(packages: Sequence[str] = BASE_PACKAGES, suite: str = SUITE, mirror: str = MIRROR) -> str:
    """What the stand-in base is made of (recipe, suite, mirror, packages, the host's extra CA
    certificates): a change of any of them makes a new base."""
    digest = hashlib.sha256(json.dumps([BASE_RECIPE, suite, mirror, sorted(packages)]).encode())
    for ca in _host_cas():
        digest.update(ca.name.encode() + b"\0" + ca.read_bytes())
    return digest.hexdigest()[:12]


def base_tag(packages: Sequence[str] = BASE_PACKAGES, suite: str = SUITE, mirror: str = MIRROR) -> str:
    return f"localhost/tf-base:{suite}-{base_key(packages, suite, mirror)}"


def _run_logged(cmd: list[str], log: Path, timeout: float) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ImageBuildError(f"{cmd[0]} did not finish within {timeout:.0f}s (log: {log})") from exc
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise ImageBuildError(f"{shlex.join(cmd)} exited with {result.returncode} (log: {log}):\n{tail}")


def _mounts_below(path: Path) -> list[str]:
    """Mount points inside `path`, deepest first (/proc/self/mounts escapes spaces and the like in octal)."""
    prefix = str(path.resolve()) + "/"
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].encode().decode("unicode_escape")
        if point.startswith(prefix):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Removes a (partial) root filesystem. debootstrap mounts /proc, /sys and device nodes inside its
    target and unmounts them when it ends; one that was killed may leave them, and removing files
    through such a mount would reach the host's, so they are unmounted first, or nothing is removed."""
    if not path.exists():
        return
    for point in _mounts_below(path):
        subprocess.run(["umount", "--lazy", point], capture_output=True, timeout=60, check=False)
    left = _mounts_below(path)
    if left:
        raise ImageBuildError(f"{path} still holds mounts ({', '.join(left)}): unmount them, then remove it")
    shutil.rmtree(path)


def ensure_base(
    podman: Podman,
    packages: Sequence[str] = BASE_PACKAGES,
    suite: str = SUITE,
    mirror: str = MIRROR,
) -> tuple[str, bool]:
    """The stand-in base's tag, and whether it had to be made (debootstrap, then podman import)."""
    tag = base_tag(packages, suite, mirror)
    if podman.image_exists(tag):
        return tag, False
    debootstrap = _which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is not installed: apt-get install --no-install-recommends debootstrap")
    work = CACHE_DIR / f"base-{suite}-{base_key(packages, suite, mirror)}.partial"
    _remove_tree(work)
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    log = CACHE_DIR / "debootstrap.log"
    log.write_text("")
    debs = CACHE_DIR / "debootstrap-debs"
    debs.mkdir(parents=True, exist_ok=True)
    print(f"image: debootstrap {suite} ({', '.join(packages)}) from {mirror}; log: {log}", file=sys.stderr, flush=True)
    # Two stages, as debootstrap --foreign allows: the first downloads and unpacks; before the second
    # (dpkg inside the chroot) dpkg is told not to fsync every file it unpacks, which on this machine's
    # disk is most of the time. The official Debian images carry the same setting under this name.
    _run_logged(
        [
            debootstrap,
            "--foreign",
            "--variant=minbase",
            f"--include={','.join(packages)}",
            f"--cache-dir={debs}",
            suite,
            str(rootfs),
            mirror,
        ],
        log,
        DEBOOTSTRAP_TIMEOUT,
    )
    speedup = rootfs / "etc" / "dpkg" / "dpkg.cfg.d" / "docker-apt-speedup"
    speedup.parent.mkdir(parents=True, exist_ok=True)
    speedup.write_text("# no fsync per unpacked file: images are built, not upgraded in place\nforce-unsafe-io\n")
    _run_logged(["chroot", str(rootfs), "/debootstrap/debootstrap", "--second-stage"], log, DEBOOTSTRAP_TIMEOUT)
    _finish_rootfs(rootfs, log)
    _import(podman, rootfs, tag, packages, suite, mirror)
    _remove_tree(work)
    return tag, True


def _finish_rootfs(rootfs: Path, log: Path) -> None:
    """The host's extra CA certificates in, and what an image does not need out: the downloaded
    packages and apt's lists (the build stage runs apt-get update itself), like the official images."""
    cas = _host_cas()
    if cas:
        target = rootfs / "usr" / "local" / "share" / "ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copy2(ca, target / ca.name)
        _run_logged(["chroot", str(rootfs), "update-ca-certificates"], log, 120)
    for folder in (rootfs / "var" / "cache" / "apt" / "archives", rootfs / "var" / "lib" / "apt" / "lists"):
        for entry in folder.iterdir():
            if entry.is_file():
                entry.unlink()


def _import(podman: Podman, rootfs: Path, tag: str, packages: Sequence[str], suite: str, mirror: str) -> None:
    """The root file system as the image `tag` (podman import of its tar stream)."""
    print(f"image: podman import -> {tag}", file=sys.stderr, flush=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            podman.command(
                "import",
                "--change",
                "ENV LANG=C.UTF-8",
                "--change",
                'CMD ["python3"]',
                "--message",
                f"debootstrap --variant=minbase {suite} {mirror}: {' '.join(packages)}",
                "-",
                tag,
            ),
            stdin=tar.stdout,
            env={**os.environ, **podman.env()},
            capture_output=True,
            timeout=600,
            check=False,
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(60)
    if result.returncode != 0 or tar.returncode != 0:
        raise ImageBuildError(f"importing the base failed (tar {tar.returncode}): {result.stderr.decode()[-2000:]}")


def build_image(podman: Podman, base: str, tag: str = IMAGE, stream: bool = False) -> None:
    """podman build of the Dockerfile on `base`, with the host's network (pip reaches PyPI, apt-get
    reaches Debian's mirror) and never a pull: the base is local."""
    podman.run(
        "build",
        "--network",
        "host",
        "--pull=never",
        "--build-arg",
        f"BASE={base}",
        "--tag",
        tag,
        "--file",
        str(REPO / "Dockerfile"),
        str(REPO),
        timeout=BUILD_TIMEOUT,
        stream=stream,
    )


@dataclass
class BuildResult:
    image: str
    base: str
    base_made: bool
    base_seconds: float
    build_seconds: float
    size_bytes: int


def build(tag: str = IMAGE, install_tools: bool = False, stream: bool = False) -> BuildResult:
    """The whole of `make image`: tools, the stand-in base (cached), the image (podman's layer cache)."""
    ensure_tools(install=install_tools)
    podman = Podman()
    started = time.monotonic()
    base, made = ensure_base(podman)
    built = time.monotonic()
    build_image(podman, base, tag, stream=stream)
    done = time.monotonic()
    return BuildResult(tag, base, made, built - started, done - built, podman.image_size(tag))


def clean(podman: Podman) -> None:
    """Removes every container and image of the project's podman storage, then the storage itself."""
    if _which("podman") is not None and podman.root.is_dir():
        podman.run("rm", "--all", "--force", check=False, timeout=300)
        podman.run("rmi", "--all", "--force", check=False, timeout=300)
    shutil.rmtree(podman.root, ignore_errors=True)
    shutil.rmtree(podman.run_root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.image.build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tag", default=IMAGE, help=f"the image's name (default {IMAGE})")
    parser.add_argument("--install-tools", action="store_true", help="apt-get install podman, runc, debootstrap")
    parser.add_argument("--env", action="store_true", help="print the podman environment as shell exports")
    parser.add_argument("--clean", action="store_true", help="remove the project's podman storage")
    args = parser.parse_args(argv)
    podman = Podman()
    try:
        if args.env:
            for name, value in podman.env().items():
                print(f"export {name}={shlex.quote(value)}")
            return 0
        if args.clean:
            clean(podman)
            print(f"removed {podman.root} and {podman.run_root}")
            return 0
        result = build(args.tag, install_tools=args.install_tools, stream=True)
    except (ImageBuildError, subprocess.TimeoutExpired) as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    print(
        f"image: {result.image} ({result.size_bytes / 1e6:.0f} MB) on {result.base}; "
        f"base {'made' if result.base_made else 'cached'} in {result.base_seconds:.0f}s, "
        f"podman build {result.build_seconds:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
