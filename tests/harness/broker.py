"""mosquitto broker with mutual TLS on a free loopback port, and an MQTT
observer (paho) that collects what devices publish."""

from __future__ import annotations

import os
import shutil
import re
import signal
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, List, NamedTuple, Optional, Sequence

from .pki import Issued, Pki
from .util import LOOPBACK, HarnessError, free_port, port_open, wait_until

# Debian installs the broker in /usr/sbin, which a non-root PATH may lack.
MOSQUITTO = os.environ.get("MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# "New client connected from 127.0.0.1:41234 as gw-0001 (p2, c1, k60, u'gw-0001')."
_CONNECT_RE = re.compile(
    r"New client connected from (?P<peer>\S+) as (?P<client_id>\S+) "
    r"\((?P<flags>[^)]*?)(?:, u'(?P<username>[^']*)')?\)")

# accepted: "New connection from 127.0.0.1:4711 on port 8883."
# refused in the TLS handshake: "Client connection from 127.0.0.1 failed: error:..."
_ATTEMPT_RE = re.compile(r"New connection from |Client connection from \S+ failed")


class ClientConnection(NamedTuple):
    client_id: str
    username: Optional[str]  # the certificate CN (use_identity_as_username)
    peer: str


class Broker:
    """mosquitto requiring client certs from `pki` (cafile = pki root).

    server: the broker's server cert (default pki.server_cert() for
    127.0.0.1/localhost). Use a cert from another Pki for "wrong server CA",
    or pki.server_cert(cn="wrong.example", ips=(), dns=("wrong.example",))
    for a hostname mismatch. `server_ca_file` is the root clients must trust
    to accept it; `client_ca_file` what the broker trusts for client certs.

    netns: run mosquitto inside that network namespace (`ip netns exec`);
    `host` is then an address of the namespace (reachable from here through
    a veth pair, see harness.netns) and `port` defaults to 8883.
    durable: keep sessions and queued QoS 1 messages across stop()/start()
    (persistence file in `dir`, unlimited queue): an Observer with
    clean_session=False then misses nothing the devices published while it
    was disconnected, even across broker restarts.
    client_ca_file: trust these CAs for client certs instead of pki's root
    (e.g. a CA made by `edgebridge ca init`); a bundle that also holds
    pki.root_file keeps the Observer's cert accepted.
    """

    def __init__(self, dir: Path | str, pki: Pki, *, server: Optional[Issued] = None,
                 port: Optional[int] = None, host: str = LOOPBACK,
                 extra_conf: Sequence[str] = (), netns: Optional[str] = None,
                 durable: bool = False, client_ca_file: Optional[Path | str] = None):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.host = host
        self.netns = netns
        self.durable = durable
        self.port = port or (8883 if netns else free_port(host))
        self.server = server or pki.server_cert()
        self.server_chain_file = self.server.write_chain(self.dir / "server-chain.pem",
                                                         "leaf+intermediate")
        self.server_key_file = self.server.write_key(self.dir / "server.key")
        # the root that signed the server cert: what a client must trust
        self.server_ca_file = self.dir / "server-ca.pem"
        self.server_ca_file.write_bytes(Issued(self.server.chain[-1]).cert_pem)
        self.client_ca_file = Path(client_ca_file) if client_ca_file else pki.root_file
        self.log_file = self.dir / "mosquitto.log"
        self.out_file = self.dir / "mosquitto.out"
        self.conf_file = self.dir / "mosquitto.conf"
        self.extra_conf = list(extra_conf)
        self.proc: Optional[subprocess.Popen] = None
        self._write_conf()

    def _write_conf(self) -> None:
        lines = [
            "per_listener_settings false",
            # mosquitto drops root privileges to 'mosquitto' otherwise, and then
            # can't read our 0600 key nor write the log in our temp dir
            *(["user root"] if os.geteuid() == 0 else []),
            f"listener {self.port} {self.host}",
            f"cafile {self.client_ca_file}",
            f"certfile {self.server_chain_file}",
            f"keyfile {self.server_key_file}",
            "require_certificate true",
            "use_identity_as_username true",
            "set_tcp_nodelay true",
            "allow_anonymous false",
            *(["persistence true", f"persistence_location {self.dir}/",
               "autosave_interval 0", "max_queued_messages 0",
               "persistent_client_expiration 1d"]
              if self.durable else ["persistence false"]),
            f"log_dest file {self.log_file}",
            "log_type all",
            "connection_messages true",
            "log_timestamp true",
            *self.extra_conf,
        ]
        self.conf_file.write_text("\n".join(lines) + "\n")

    # -- lifecycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10) -> "Broker":
        if self.running:
            raise HarnessError("broker already running")
        with open(self.out_file, "ab") as out:
            prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
            # `ip netns exec` execs mosquitto: proc is mosquitto itself
            self.proc = subprocess.Popen([*prefix, MOSQUITTO, "-c", str(self.conf_file)],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # no terminal ^C
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10) -> None:
        def ready():
            if self.proc is not None and self.proc.poll() is not None:
                raise HarnessError(
                    f"mosquitto exited with {self.proc.returncode}:\n"
                    f"{self.out_file.read_text(errors='replace')}\n{self.log}")
            return port_open(self.host, self.port)
        wait_until(ready, timeout, what=f"mosquitto on {self.host}:{self.port}")

    def stop(self, timeout: float = 10) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        rc = self.proc.returncode
        self.proc = None
        # the port must really be free before a restart binds it again
        wait_until(lambda: not port_open(self.host, self.port), timeout,
                   what="broker port to close")
        return rc

    def restart(self, down_for: float = 0.0, timeout: float = 10) -> "Broker":
        """Stop and start again on the same port (sessions are not persisted)."""
        self.stop(timeout)
        if down_for:
            time.sleep(down_for)
        return self.start(timeout)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- observation ---------------------------------------------------------
    @property
    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self) -> int:
        """Current log length: pass as since= to look only at later entries."""
        return len(self.log)

    def connection_attempts(self, since: int = 0) -> int:
        """TCP/TLS connections seen (accepted or failed in the handshake).
        Note wait_ready()'s probe counts as one failed attempt."""
        return len(_ATTEMPT_RE.findall(self.log[since:]))

    def clients(self) -> List[ClientConnection]:
        """Every client connection accepted so far (from the broker log)."""
        return [ClientConnection(m["client_id"], m["username"], m["peer"])
                for m in _CONNECT_RE.finditer(self.log)]

    def client_ids(self) -> List[str]:
        return [c.client_id for c in self.clients()]

    def wait_client(self, client_id: str, timeout: float = 15,
                    count: int = 1) -> List[ClientConnection]:
        """Wait until `client_id` has connected `count` times in total."""
        def got():
            conns = [c for c in self.clients() if c.client_id == client_id]
            return conns if len(conns) >= count else None
        return wait_until(got, timeout,
                          what=f"client {client_id!r} connected x{count}\n{self.log[-3000:]}")


class Line(NamedTuple):
    topic: str
    text: str
    time: float  # time.time() when received
    msg_index: int  # which PUBLISH it came in (lines of one publish share it)


class Observer:
    """paho-mqtt subscriber with a client cert (default CN "observer").

    Every payload is split at '\\n' into `lines`; `wait_lines` polls them.
    Re-subscribes after reconnects (e.g. across Broker.restart()).
    clean_session=False with a Broker(durable=True): the broker keeps the
    subscription and queues messages while the observer is away (also
    across broker restarts), so no line is missed.
    """

    def __init__(self, broker: Broker, cert: Optional[Issued] = None,
                 topics: Sequence[str] = ("s/us",), client_id: str = "observer",
                 ca_file: Optional[Path] = None, check_hostname: bool = True,
                 on_line: Optional[Callable[[Line], None]] = None,
                 clean_session: bool = True):
        import paho.mqtt.client as mqtt  # deferred: only needed when used

        self.broker = broker
        self.topics = list(topics)
        self.cert = cert or broker.pki.client_cert(client_id)
        d = broker.dir / f"client-{client_id}"
        self.cert_file = self.cert.write_chain(d / "chain.pem", "leaf+intermediate")
        self.key_file = self.cert.write_key(d / "key.pem")
        self.on_line = on_line
        self.lines: List[Line] = []
        self.connects = 0
        self._n_msgs = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._pending_mids: set = set()
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.errors: List[BaseException] = []
        self.client_id = client_id

        c = mqtt.Client(client_id=client_id, clean_session=clean_session,
                        protocol=mqtt.MQTTv311)
        c.tls_set(ca_certs=str(ca_file or broker.server_ca_file),
                  certfile=str(self.cert_file), keyfile=str(self.key_file),
                  cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if not check_hostname:
            c.tls_insecure_set(True)  # still verifies the chain, not the name
        c.reconnect_delay_set(min_delay=0.2, max_delay=1)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client, userdata, flags, rc):
        if rc != 0:
            return
        self.connects += 1
        self._subscribed.clear()
        result, mid = client.subscribe([(t, 1) for t in self.topics])
        self._pending_mids.add(mid)

    def _on_disconnect(self, client, userdata, rc):
        self._subscribed.clear()

    def _on_subscribe(self, client, userdata, mid, granted_qos):
        if mid in self._pending_mids:
            self._pending_mids.discard(mid)
            self._subscribed.set()

    def _on_message(self, client, userdata, msg):
        now = time.time()
        text = msg.payload.decode("utf-8", errors="replace")
        new = []
        with self._lock:
            idx = self._n_msgs
            self._n_msgs += 1
            for part in text.split("\n"):
                part = part.rstrip("\r")
                if part:
                    line = Line(msg.topic, part, now, idx)
                    self.lines.append(line)
                    new.append(line)
        if self.on_line:
            for line in new:
                self.on_line(line)

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 10) -> "Observer":
        """Connect and return once the subscription is acknowledged."""
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self._thread = threading.Thread(target=self._thread_main, daemon=True,
                                        name=f"observer-{self.client_id}")
        self._thread.start()
        if not self._subscribed.wait(timeout):
            errors = list(self.errors)
            self.stop()
            raise HarnessError(f"observer could not subscribe within {timeout}s "
                               f"(errors: {errors[-3:]})\n{self.broker.log[-3000:]}")
        return self

    def _thread_main(self) -> None:
        # paho 1.6's loop_start() thread dies on an SSL error (e.g. the broker
        # rejecting our cert); this loop survives it and keeps reconnecting.
        first = True
        while not self._stopping.is_set():
            try:
                if not first:
                    self.client.reconnect()
                first = False
                self.client.loop_forever(retry_first_connection=True)
                if self._stopping.is_set():
                    break
            except Exception as e:  # ssl.SSLError, OSError, ...
                self.errors.append(e)
            self._stopping.wait(0.2)

    def wait_subscribed(self, connects: int = 1, timeout: float = 15) -> None:
        """Wait until connected `connects` times in total and subscribed.

        After a broker restart: n = obs.connects; broker.restart();
        obs.wait_subscribed(n + 1).
        """
        wait_until(lambda: self.connects >= connects and self._subscribed.is_set(),
                   timeout, what=f"observer connect #{connects} + subscription")

    def stop(self, timeout: float = 10) -> None:
        self._stopping.set()
        try:
            self.client.disconnect()
        except Exception:
            pass  # already gone
        self.client._thread_terminate = True  # paho 1.6: ends loop_forever
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise HarnessError("observer thread did not stop")
            self._thread = None

    def __enter__(self) -> "Observer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- data ----------------------------------------------------------------
    def snapshot(self) -> List[Line]:
        with self._lock:
            return list(self.lines)

    def texts(self) -> List[str]:
        return [line.text for line in self.snapshot()]

    def wait_lines(self, pred: Optional[Callable[[Line], bool]] = None, n: int = 1,
                   timeout: float = 15) -> List[Line]:
        """Wait until at least `n` received lines satisfy `pred`; return them all."""
        pred = pred or (lambda line: True)

        def enough():
            got = [line for line in self.snapshot() if pred(line)]
            return got if len(got) >= n else None
        try:
            return wait_until(enough, timeout, what=f"{n} matching lines")
        except TimeoutError as e:
            got = self.texts()
            raise TimeoutError(f"{e}; received {len(got)} lines, last: {got[-10:]}") from None
