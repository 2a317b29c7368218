"""UdpLossProxy: a UDP forwarder that drops a share of the datagrams in each
direction, with a seeded random generator (the same seed drops the same
positions), for CoAP/DTLS over a lossy link.

    with UdpLossProxy("127.0.0.1", cloud.port, loss=0.25, seed=7) as p:
        ... the daemon talks to 127.0.0.1:p.port ...
        p.set_loss(0.0)
        p.forwarded, p.dropped        # {"up": n, "down": n}

One upstream socket per client address (as a NAT would), so the server sees
one peer per client; a thread with select(), stopped by close().
"""

from __future__ import annotations

import random
import select
import socket
import threading
from typing import Dict, Optional, Tuple

from .util import LOOPBACK


class UdpLossProxy:
    def __init__(self, target_host: str, target_port: int, *, loss: float = 0.0,
                 seed: int = 1, listen_host: str = LOOPBACK,
                 listen_port: int = 0):
        self.target = (target_host, target_port)
        self.loss = {"up": loss, "down": loss}
        self._rng = random.Random(seed)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((listen_host, listen_port))
        self.host, self.port = self._sock.getsockname()
        self._up: Dict[Tuple[str, int], socket.socket] = {}
        self._client_of: Dict[socket.socket, Tuple[str, int]] = {}
        self.forwarded = {"up": 0, "down": 0}
        self.dropped = {"up": 0, "down": 0}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="udploss", daemon=True)
        self._thread.start()

    def set_loss(self, loss: float, direction: Optional[str] = None) -> None:
        with self._lock:
            for d in ([direction] if direction else ["up", "down"]):
                self.loss[d] = loss

    def _drop(self, direction: str) -> bool:
        with self._lock:
            drop = self._rng.random() < self.loss[direction]
            (self.dropped if drop else self.forwarded)[direction] += 1
            return drop

    def _run(self) -> None:
        while not self._stop:
            socks = [self._sock, self._wake_r, *self._client_of]
            ready, _, _ = select.select(socks, [], [])
            for s in ready:
                if s is self._wake_r:
                    continue
                try:
                    data, addr = s.recvfrom(65535)
                except OSError:
                    continue
                if s is self._sock:
                    up = self._up.get(addr)
                    if up is None:
                        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind((LOOPBACK, 0))
                        self._up[addr] = up
                        self._client_of[up] = addr
                    if not self._drop("up"):
                        try:
                            up.sendto(data, self.target)
                        except OSError:
                            pass  # server down: like a lost datagram
                else:
                    if not self._drop("down"):
                        try:
                            self._sock.sendto(data, self._client_of[s])
                        except OSError:
                            # a client port that went away answers with
                            # ICMP, reported on a later send: a lost
                            # datagram, never the end of the proxy
                            pass

    def close(self) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        for s in [self._sock, self._wake_r, self._wake_w, *self._client_of]:
            s.close()

    def __enter__(self) -> "UdpLossProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
