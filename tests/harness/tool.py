"""Run the `edgebridge` command (token, key, cert, ca) as a one-shot process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping, Optional, Sequence

from .util import REPO_ROOT, merged_env


def tool_binary() -> Path:
    """$EDGEBRIDGE, else <repo>/build/edgebridge."""
    return Path(os.environ.get("EDGEBRIDGE") or REPO_ROOT / "build" / "edgebridge")


def run_edgebridge(args: Sequence[object], env: Optional[Mapping[str, str]] = None,
                   timeout: float = 120, stdin=subprocess.DEVNULL,
                   binary: Optional[Path] = None) -> subprocess.CompletedProcess:
    """`edgebridge ARGS` with text stdout/stderr; stdin is not a terminal
    unless one is passed (so PIN prompts are impossible by default)."""
    path = Path(binary) if binary else tool_binary()
    if not path.is_file():
        raise AssertionError(f"edgebridge binary not found: {path} "
                             "(make build/edgebridge, or set EDGEBRIDGE)")
    return subprocess.run([str(path), *map(str, args)], env=merged_env(env),
                          stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace",
                          timeout=timeout)
