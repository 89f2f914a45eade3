"""A Docker engine for tests: the one the environment names, the system one, or a private `dockerd`.

Images cannot be pulled here, so the test image is built with `docker import` of a tiny rootfs
holding Debian's static busybox (sh, sleep, httpd, false ...). When no engine can be had the
caller fails with the reason: Docker tests are never skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.apt import apt_install

TEST_IMAGE = "shoal-busybox:test"
_APPLETS = ("sh", "sleep", "httpd", "false", "true", "echo", "cat", "ls", "kill", "wget", "env", "nc")


class NoEngine(RuntimeError):
    pass


def _answers(host: str) -> bool:
    env = {**os.environ, "DOCKER_HOST": host}
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise NoEngine(f"need {' '.join(packages)}: run as root or `apt-get install {' '.join(packages)}`")
    done = apt_install(*packages)
    if done.returncode != 0:
        raise NoEngine(f"apt-get install {' '.join(packages)} failed: {done.stderr.decode()[-500:]}")


@contextlib.contextmanager
def docker_engine() -> Iterator[str]:
    """Yield a `unix://` address of an engine that answers; start (and later stop) a private one if needed."""
    for host in filter(None, (os.environ.get("SHOAL_DOCKER_HOST"), "unix:///var/run/docker.sock")):
        if _answers(host):
            yield host
            return
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        _apt_install("docker.io")
    root = Path(tempfile.mkdtemp(prefix="shoal-dockerd-"))
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(
        ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
         "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{sock}",
         "--storage-driver=vfs", "--iptables=false", "--bridge=none"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    host = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(host):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise NoEngine(f"private dockerd did not start: {(root / 'dockerd.log').read_text()[-1500:]}")
            time.sleep(0.3)
        yield host
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        subprocess.run(["umount", "-R", str(root / "exec")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _static_busybox() -> Path:
    path = Path("/bin/busybox")
    if not path.exists() or b"statically linked" not in subprocess.run(
        ["file", "-L", str(path)], capture_output=True, check=False).stdout:
        _apt_install("busybox-static", "file")
    return path


def ensure_test_image(host: str) -> str:
    """Build `shoal-busybox:test` with `docker import` unless the engine has it already."""
    env = {**os.environ, "DOCKER_HOST": host}
    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], env=env, capture_output=True).returncode == 0:
        return TEST_IMAGE
    busybox = _static_busybox()
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            for folder in ("bin", "tmp", "www"):
                info = tarfile.TarInfo(folder)
                info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
                tar.addfile(info)
            tar.add(busybox, arcname="bin/busybox")
            for applet in _APPLETS:
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        done = subprocess.run(["docker", "import", str(tar_path), TEST_IMAGE], env=env, capture_output=True)
        if done.returncode != 0:
            raise NoEngine(f"docker import failed: {done.stderr.decode()}")
    return TEST_IMAGE
