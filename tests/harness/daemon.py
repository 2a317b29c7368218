"""Run edgebridged as a subprocess and watch its output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from .util import REPO_ROOT, merged_env

Pattern = Union[str, "re.Pattern[str]"]


def daemon_binary() -> Path:
    """$EDGEBRIDGED, else <repo>/build/edgebridged."""
    return Path(os.environ.get("EDGEBRIDGED") or REPO_ROOT / "build" / "edgebridged")


def _compile(p: Pattern) -> "re.Pattern[str]":
    return p if isinstance(p, re.Pattern) else re.compile(p, re.I | re.M)


def run_edgebridged(args: Sequence[str], env: Optional[Mapping[str, str]] = None,
                    timeout: float = 30, binary: Optional[Path] = None
                    ) -> subprocess.CompletedProcess:
    """One-shot run (--check-config, --version, ...); text stdout/stderr."""
    return subprocess.run([str(binary or daemon_binary()), *map(str, args)],
                          env=merged_env(env), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, errors="replace", timeout=timeout)


class DaemonExited(AssertionError):
    pass


class Daemon:
    """`edgebridged -c CONFIG` in the foreground, stdout+stderr to a file.

    d = Daemon(cfg, env=token.env).start()
    d.wait_for_log(r"connected to", timeout=15)
    assert d.stop() == 0
    """

    def __init__(self, config_path: Path | str, env: Optional[Mapping[str, str]] = None,
                 binary: Optional[Path | str] = None, args: Sequence[str] = (),
                 out_file: Optional[Path | str] = None):
        self.binary = Path(binary) if binary else daemon_binary()
        self.config_path = Path(config_path)
        self.env = dict(env or {})
        self.args = list(args)
        self.out_file = Path(out_file) if out_file else \
            self.config_path.parent / f"edgebridged-{os.getpid()}-{id(self):x}.out"
        self.proc: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None

    @property
    def argv(self):
        return [str(self.binary), "-c", str(self.config_path), *self.args]

    def start(self) -> "Daemon":
        if not self.binary.exists():
            raise AssertionError(f"edgebridged binary not found: {self.binary} "
                                 "(build it with make, or set EDGEBRIDGED)")
        with open(self.out_file, "wb") as out:
            self.proc = subprocess.Popen(self.argv, env=merged_env(self.env),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.started_at = time.monotonic()
        return self

    # -- state ---------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.poll() if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def output(self) -> str:
        try:
            return self.out_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """Current output length: pass as since= to look only at later output."""
        return len(self.output)

    def count(self, pattern: Pattern, since: int = 0) -> int:
        return len(_compile(pattern).findall(self.output[since:]))

    # -- waiting -------------------------------------------------------------
    def wait_for_log(self, pattern: Pattern, timeout: float = 15, since: int = 0,
                     count: int = 1) -> "re.Match[str]":
        """Wait until `pattern` occurs `count` times in the output after
        offset `since`; returns the last match. Fails early (with the whole
        output) if the daemon exits before that."""
        rx = _compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.proc is not None and self.proc.poll() is not None
            matches = list(rx.finditer(self.output[since:]))
            if len(matches) >= count:
                return matches[count - 1]
            if exited:
                raise DaemonExited(
                    f"edgebridged exited with {self.proc.returncode} before logging "
                    f"{rx.pattern!r}; output:\n{self.output}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"edgebridged did not log {rx.pattern!r} (x{count}) "
                                   f"within {timeout}s; output:\n{self.output}")
            time.sleep(0.05)

    def wait(self, timeout: float = 15) -> int:
        """Wait for the daemon to exit by itself; return its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"edgebridged still running after {timeout}s; output:\n"
                               f"{self.output}") from None

    # -- stopping ------------------------------------------------------------
    def signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> Optional[int]:
        """SIGTERM, wait up to `timeout`, then SIGKILL as a last resort.
        Returns the exit code (negative = killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def kill9(self) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
