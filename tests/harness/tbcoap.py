"""TbCoap: the ThingsBoard CoAP device endpoint for the tests
(build/tests/tb_coap_server, tests/cloud/tb_coap_server.c, libcoap 4.3 with
DTLS): client certificates chaining to `client_ca_file` required, POSTs
answered 2.01 and recorded, observe on /api/v1/attributes and /api/v1/rpc.

    cloud = TbCoap(dir, pki).start()
    cloud.port, cloud.server_ca_file          # what the daemon trusts
    cloud.wait_posts("api/v1/telemetry", n=3)
    cloud.notify("api/v1/attributes", '{"fw":"2"}')
    cloud.shared({"sensor.a.interval": "2s"})  # kept, and pushed
    cloud.rpc(5, {"method": "getGpio", "params": {}})
    cloud.wait_rpc_response(5)
    cloud.restart(down_for=2)                  # same port

POSTs to /api/v1/telemetry and /api/v1/attributes are validated as
ThingsBoard does (4.00 for anything else); max_body= answers 4.13 above it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from .pki import Issued, Pki
from .util import LOOPBACK, REPO_ROOT, HarnessError, wait_until


def server_binary() -> Path:
    """$TB_COAP_SERVER, else <repo>/build/tests/tb_coap_server."""
    return Path(os.environ.get("TB_COAP_SERVER")
                or REPO_ROOT / "build" / "tests" / "tb_coap_server")


def free_udp_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TbCoap:
    def __init__(self, dir: Path | str, pki: Pki, *, server: Optional[Issued] = None,
                 client_ca_file: Optional[Path | str] = None,
                 port: Optional[int] = None, post: Sequence[str] = (),
                 observe: Sequence[str] = (), verbose: bool = False,
                 max_body: int = 0):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = LOOPBACK
        self.port = port or free_udp_port()
        self.server = server or pki.server_cert()
        self.cert_file = self.server.write_cert(self.dir / "coap-server.pem")
        self.key_file = self.server.write_key(self.dir / "coap-server.key")
        self.chain_file = Issued(self.server.chain[0]).write_cert(
            self.dir / "coap-server-intermediate.pem")
        self.server_ca_file = self.dir / "coap-server-ca.pem"
        self.server_ca_file.write_bytes(Issued(self.server.chain[-1]).cert_pem)
        self.client_ca_file = Path(client_ca_file) if client_ca_file else pki.root_file
        self.record_file = self.dir / "tb-coap-record.jsonl"
        self.out_file = self.dir / "tb-coap-server.out"
        self.post = list(post)
        self.observe = list(observe)
        self.verbose = verbose
        self.max_body = max_body
        self.proc: Optional[subprocess.Popen] = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10) -> "TbCoap":
        if self.running:
            raise HarnessError("CoAP server already running")
        binary = server_binary()
        if not binary.is_file():
            raise HarnessError(f"{binary} missing: make {binary.relative_to(REPO_ROOT)}")
        cmd = [str(binary), "--port", str(self.port), "--cert", str(self.cert_file),
               "--key", str(self.key_file), "--chain", str(self.chain_file),
               "--client-ca", str(self.client_ca_file), "--record", str(self.record_file)]
        for p in self.post:
            cmd += ["--post", p]
        for p in self.observe:
            cmd += ["--observe", p]
        if self.verbose:
            cmd.append("--verbose")
        if self.max_body:
            cmd += ["--max-body", str(self.max_body)]
        self._out = open(self.out_file, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._out)
        line = self._readline(timeout)
        if not line.startswith("ready"):
            self.stop()
            raise HarnessError(f"CoAP server did not start: {line!r}; see {self.out_file}")
        return self

    def _readline(self, timeout: float) -> str:
        import select
        assert self.proc and self.proc.stdout
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise HarnessError("no answer from the CoAP server")
        return self.proc.stdout.readline().decode().strip()

    def command(self, text: str, timeout: float = 5) -> None:
        if not self.running:
            raise HarnessError("CoAP server not running")
        assert self.proc and self.proc.stdin
        self.proc.stdin.write((text + "\n").encode())
        self.proc.stdin.flush()
        if self._readline(timeout) != "ok":
            raise HarnessError(f"CoAP server refused {text!r}")

    def notify(self, path: str, text: str) -> None:
        """New state of an observable resource, sent to its observers."""
        self.command(f"notify {path} {text}")

    def shared(self, attrs: Any) -> None:
        """Shared attributes set (a dict, merged) and pushed to the observers
        of /api/v1/attributes; a str is pushed as it is (malformed pushes)."""
        self.command("shared " + (attrs if isinstance(attrs, str)
                                  else json.dumps(attrs, separators=(",", ":"))))

    def rpc(self, id: int, request: Any) -> None:
        """A server-side RPC: {"id": id, **request} to the observers of
        /api/v1/rpc; a str is sent as it is (no id added)."""
        text = request if isinstance(request, str) else json.dumps(
            {"id": id, **request}, separators=(",", ":"))
        self.notify("api/v1/rpc", text)

    def rpc_responses(self, id: int) -> List[dict]:
        return self.posts(f"api/v1/rpc/{id}")

    def wait_rpc_response(self, id: int, timeout: float = 30) -> Any:
        """The JSON the device POSTed to /api/v1/rpc/{id}."""
        r = wait_until(lambda: self.rpc_responses(id), timeout, interval=0.1,
                       what=f"the response to RPC {id}")
        return json.loads(r[0]["payload"])

    def telemetry(self) -> List[dict]:
        """The telemetry objects accepted (2.01), arrays flattened."""
        out = []
        for r in self.posts("api/v1/telemetry"):
            if r["code"] != "2.01":
                continue
            data = json.loads(r["payload"])
            out.extend(data if isinstance(data, list) else [data])
        return out

    def fail_next(self, n: int, code: str = "5.03") -> None:
        self.command(f"fail {n} {code}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.command("quit", timeout=2)
            except Exception:
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self._out.close()

    def kill(self) -> None:
        """SIGKILL: no DTLS close_notify, the sessions are just gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop()

    def restart(self, down_for: float = 0) -> "TbCoap":
        self.kill()
        time.sleep(down_for)
        return self.start()

    # -- what arrived --------------------------------------------------------
    def records(self, ev: Optional[str] = None) -> List[dict]:
        if not self.record_file.exists():
            return []
        out = []
        for line in self.record_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if ev is None or r.get("ev") == ev:
                    out.append(r)
        return out

    def posts(self, path: Optional[str] = None) -> List[dict]:
        return [r for r in self.records("post")
                if path is None or r["path"] == path.lstrip("/")]

    def wait_posts(self, path: Optional[str] = None, n: int = 1,
                   timeout: float = 15) -> List[dict]:
        return wait_until(lambda: (lambda p: p if len(p) >= n else None)(self.posts(path)),
                          timeout, interval=0.1, what=f"{n} POSTs to {path}")

    def lines(self, path: str = "s/us") -> list:
        """POSTed payloads on path split at LF, as broker.Line (topic = path),
        for accounting.Ledger."""
        from .broker import Line
        out = []
        for i, r in enumerate(self.posts(path)):
            for text in r.get("payload", "").split("\n"):
                if text:
                    out.append(Line(r["path"], text, r["t"], i))
        return out

    def wait_observers(self, path: str, n: int = 1, timeout: float = 15) -> List[dict]:
        def got():
            o = [r for r in self.records("observe") if r["path"] == path.lstrip("/")]
            return o if len(o) >= n else None
        return wait_until(got, timeout, interval=0.1, what=f"{n} observers of {path}")
