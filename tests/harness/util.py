"""Small helpers shared by the harness: ports, polling, subprocess runs."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, TypeVar

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


class HarnessError(RuntimeError):
    """A harness step (not the system under test) failed."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on `host` right now (loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.05,
               what: str = "condition") -> T:
    """Poll `pred` until it returns a truthy value; return that value.

    Raises TimeoutError naming `what` when `timeout` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def merged_env(extra: Optional[Mapping[str, str]] = None) -> dict:
    env = dict(os.environ)
    if extra:
        env.update(extra)
    return env


def run(cmd: Sequence[str], env: Optional[Mapping[str, str]] = None,
        timeout: float = 60, check: bool = True, input: Optional[bytes] = None,
        cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a helper tool (openssl, softhsm2-util, ...) with a time limit.

    On failure raises HarnessError with the command's output.
    """
    proc = subprocess.run(list(map(str, cmd)), env=merged_env(env), input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise HarnessError(
            f"command failed (exit {proc.returncode}): {' '.join(map(str, cmd))}\n"
            f"stdout: {proc.stdout.decode(errors='replace')}\n"
            f"stderr: {proc.stderr.decode(errors='replace')}")
    return proc


def write_private(path: Path, data: bytes | str, mode: int = 0o600) -> Path:
    """Write a file that is created with `mode` (no window where it is wider)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    if path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # umask may have narrowed it
    return path
