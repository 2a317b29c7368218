"""A network namespace joined to the root namespace by a veth pair, for
partition tests: run the broker inside (Broker(netns=ns.name, host=ns.ns_ip)),
the daemon outside, then ns.partition() / ns.heal().

    ns = NetNs().create()            # 10.231.X.1/30 here, 10.231.X.2/30 inside
    ...
    ns.partition()                   # host end of the veth down: packets vanish
    ns.heal()
    ns.close()                       # namespace, veth pair; idempotent

Needs root (CAP_NET_ADMIN) and `ip` (iproute2). NetNs.unavailable() says
why it can't be used, or None. close() kills only processes still inside
*this* namespace (ones the test started there), by pid.
"""

from __future__ import annotations

import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from typing import List, Optional, Sequence

from .util import HarnessError

IP = shutil.which("ip") or "/usr/sbin/ip"
SUBNET_PREFIX = "10.231"


def _ip(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    proc = subprocess.run([IP, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise HarnessError(f"ip {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip()}")
    return proc


def _used_third_octets() -> set:
    out = _ip("-4", "-o", "addr", "show", check=False).stdout
    used = set()
    for m in re.finditer(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", out):
        used.add(int(m.group(1)))
    return used


class NetNs:
    def __init__(self, tag: Optional[str] = None):
        tag = tag or secrets.token_hex(3)[:5]
        self.name = f"eb-{tag}"
        self.host_if = f"ebh{tag}"      # stays in the root namespace
        self.ns_if = f"ebn{tag}"        # moved into the namespace
        self.host_ip: Optional[str] = None
        self.ns_ip: Optional[str] = None
        self.created = False
        self.partitioned = False

    # -- availability --------------------------------------------------------
    @staticmethod
    def unavailable() -> Optional[str]:
        """None when namespaces can be made here, else the reason."""
        if not os.path.exists(IP):
            return "`ip` (iproute2) is not installed"
        if os.geteuid() != 0:
            return "not root: creating network namespaces needs CAP_NET_ADMIN"
        probe = NetNs()
        try:
            _ip("netns", "add", probe.name)
        except (HarnessError, OSError) as e:
            return f"cannot create a network namespace: {e}"
        _ip("netns", "del", probe.name, check=False)
        return None

    # -- lifecycle -----------------------------------------------------------
    def create(self) -> "NetNs":
        octets = [o for o in range(1, 255) if o not in _used_third_octets()]
        if not octets:
            raise HarnessError(f"no free {SUBNET_PREFIX}.X.0/30 subnet")
        x = random.choice(octets)
        self.host_ip = f"{SUBNET_PREFIX}.{x}.1"
        self.ns_ip = f"{SUBNET_PREFIX}.{x}.2"
        _ip("netns", "add", self.name)
        self.created = True
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
                "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if)
            _ip("-n", self.name, "link", "set", self.ns_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise
        return self

    def exec_prefix(self) -> List[str]:
        """Prefix an argv with this to run it inside the namespace."""
        return [IP, "netns", "exec", self.name]

    def run(self, argv: Sequence[str], timeout: float = 10, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run([*self.exec_prefix(), *map(str, argv)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise HarnessError(f"{argv} in {self.name} failed: {proc.stderr.strip()}")
        return proc

    def pids(self) -> List[int]:
        """Processes inside the namespace (i.e. started there by this test)."""
        if not self.created:
            return []
        out = _ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]

    # -- partition -----------------------------------------------------------
    def partition(self) -> None:
        """Take the host end of the veth down: from now on packets between
        the root namespace and this one are dropped silently (no RST, no
        FIN), like a cable pulled somewhere on the way."""
        _ip("link", "set", self.host_if, "down")
        self.partitioned = True

    def heal(self, timeout: float = 5) -> None:
        _ip("link", "set", self.host_if, "up")
        self.partitioned = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:      # carrier back on both ends
            out = _ip("-o", "link", "show", self.host_if, check=False).stdout
            if "LOWER_UP" in out and "NO-CARRIER" not in out:
                return
            time.sleep(0.05)
        raise HarnessError(f"{self.host_if} did not come back up: {out}")

    # -- cleanup ---------------------------------------------------------------
    def close(self) -> None:
        """Remove the veth pair and the namespace; processes of ours still
        inside get SIGKILL (by pid). Safe to call twice."""
        if not self.created:
            return
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _ip("link", "del", self.host_if, check=False)   # takes the peer with it
        _ip("netns", "del", self.name, check=False)
        self.created = False

    def __enter__(self) -> "NetNs":
        return self.create()

    def __exit__(self, *exc) -> None:
        self.close()
