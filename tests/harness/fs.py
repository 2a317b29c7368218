"""Small tmpfs mounts for disk-full tests (root only).

    m = Tmpfs(env.state_dir, size="512k").mount()
    ...                                  # the daemon fills it up
    m.resize("8m")                       # room again, contents kept
    m.close()                            # unmount (after the daemon stopped)
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Optional

from .util import HarnessError


def _run(argv, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=30)
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def is_mountpoint(path: Path | str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


class Tmpfs:
    def __init__(self, dir: Path | str, size: str = "512k", mode: str = "0700"):
        self.dir = Path(dir)
        self.size = size
        self.mode = mode
        self.mounted = False

    @staticmethod
    def unavailable() -> Optional[str]:
        if os.geteuid() != 0:
            return "not root: mounting a tmpfs needs CAP_SYS_ADMIN"
        return None

    def mount(self) -> "Tmpfs":
        self.dir.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "tmpfs", "-o", f"size={self.size},mode={self.mode}",
              "tmpfs", str(self.dir)])
        self.mounted = True
        return self

    def resize(self, size: str) -> None:
        """Grow (or shrink) in place; files stay."""
        _run(["mount", "-o", f"remount,size={size}", str(self.dir)])
        self.size = size

    def usage(self) -> dict:
        st = os.statvfs(self.dir)
        return {"size": st.f_blocks * st.f_frsize, "free": st.f_bavail * st.f_frsize,
                "used": (st.f_blocks - st.f_bfree) * st.f_frsize}

    def close(self) -> None:
        """Unmount; if still busy after a few tries, detach lazily. Idempotent."""
        if not self.mounted:
            return
        for _ in range(20):
            if _run(["umount", str(self.dir)], check=False).returncode == 0:
                break
            time.sleep(0.1)
        else:
            _run(["umount", "-l", str(self.dir)])
        self.mounted = False

    def __enter__(self) -> "Tmpfs":
        return self.mount()

    def __exit__(self, *exc) -> None:
        self.close()
