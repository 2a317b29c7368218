"""C8yCloud: the Broker with the Cumulocity MQTT emulator plugin
(tests/cloud/c8y_plugin.c, built as build/tests/c8y_plugin.so).

The plugin enforces what Cumulocity's MQTT endpoint enforces (client id vs
certificate CN, topic ACL, SmartREST static templates, JWT on s/uat) and
records everything as JSON lines; this class writes its secret, configures
the broker, reads the record and drives the plugin as an admin client
(CN "c8yadmin") through c8y/<device>/<topic> and c8y/control.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import ssl
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .broker import Broker
from .pki import Pki
from .util import REPO_ROOT, HarnessError, wait_until, write_private

PLUGIN = Path(os.environ.get("C8Y_PLUGIN") or REPO_ROOT / "build" / "tests" / "c8y_plugin.so")

ADMIN_CN = "c8yadmin"
DEFAULT_ADMINS = ("observer", ADMIN_CN)


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode_jwt(token: str, secret: Optional[bytes] = None) -> Dict[str, Any]:
    """The payload of an HS256 JWT as a dict.

    With `secret`, the header must say HS256 and the signature must verify
    (HarnessError otherwise). Without it, nothing is checked but the shape.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise HarnessError(f"not a JWT (want 3 dot-separated parts): {token!r}")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
        signature = _b64url_decode(parts[2])
    except (ValueError, json.JSONDecodeError) as e:
        raise HarnessError(f"malformed JWT {token!r}: {e}") from e
    if secret is not None:
        if header.get("alg") != "HS256":
            raise HarnessError(f"JWT alg is {header.get('alg')!r}, not HS256")
        want = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(want, signature):
            raise HarnessError("JWT signature does not verify with the secret")
    return payload


def read_records(path: Path, ev: Optional[str] = None,
                 device: Optional[str] = None) -> List[Dict[str, Any]]:
    """An emulator plugin's JSON-lines record (optionally of one kind
    and/or one device)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.split("\n"):
        if not line:
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if ev is not None and r.get("ev") != ev:
            continue
        if device is not None and r.get("device") != device:
            continue
        out.append(r)
    return out


def admin_publish(broker: Broker, chain: Path, key: Path, client_id: str, topic: str,
                  payload: bytes | str, timeout: float = 10) -> None:
    """As an admin client of an emulator plugin: connect with chain/key,
    publish at QoS 1, wait for the PUBACK, disconnect. Once this returns,
    the plugin has handled the message."""
    import paho.mqtt.client as mqtt  # deferred: only needed when used

    c = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
    c.tls_set(ca_certs=str(broker.server_ca_file), certfile=str(chain),
              keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED,
              tls_version=ssl.PROTOCOL_TLS_CLIENT)
    connected = threading.Event()
    result: Dict[str, int] = {}

    def on_connect(client, userdata, flags, rc):
        result["rc"] = rc
        connected.set()

    c.on_connect = on_connect
    try:
        c.connect(broker.host, broker.port, keepalive=30)
    except (OSError, ssl.SSLError) as e:
        raise HarnessError(f"admin client cannot connect: {e}") from e
    c.loop_start()
    try:
        if not connected.wait(timeout) or result.get("rc") != 0:
            raise HarnessError(f"admin client not connected (rc={result.get('rc')})")
        info = c.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise HarnessError(f"admin publish to {topic} not acknowledged")
    finally:
        c.disconnect()
        c.loop_stop()


class C8yCloud:
    """mosquitto + the Cumulocity emulator plugin, under `dir`.

    cloud = C8yCloud(tmp_path / "c8y", pki, jwt_lifetime=4).start()
    ... a device connects as "gw-0001" or "d:gw-0001" with CN gw-0001 ...
    cloud.wait_lines("gw-0001", lambda l: l.startswith("200,"))
    cloud.send_operation("gw-0001", "510,gw-0001")
    cloud.stop()

    jwt_lifetime: seconds (the platform's minimum is 300; any >= 1 here).
    admins: CNs that bypass every device rule (the Observer is "observer";
    this class's own control client is "c8yadmin", always added).
    max_payload / max_payload_header: the size limit (16184 bytes, counted
    over the whole PUBLISH packet as the platform documents; header=False
    counts the payload only).
    broker_kw: more Broker(...) arguments (server=, port=, durable=, netns=,
    host=, client_ca_file=, extra_conf=).
    """

    def __init__(self, dir: Path | str, pki: Pki, *, jwt_lifetime: int = 3600,
                 tenant: str = "t100", admins: Sequence[str] = DEFAULT_ADMINS,
                 max_payload: int = 16184, max_payload_header: bool = True,
                 **broker_kw: Any):
        if not PLUGIN.is_file():
            raise HarnessError(f"the Cumulocity emulator plugin {PLUGIN} is missing: "
                               "run `make build/tests/c8y_plugin.so` first")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.tenant = tenant
        self.secret = os.urandom(32)
        self.secret_file = write_private(self.dir / "c8y-jwt-secret", self.secret)
        self.record_file = self.dir / "c8y-record.jsonl"
        admins = list(dict.fromkeys([*admins, ADMIN_CN]))
        conf = [
            # mosquitto 2.0 skips MOSQ_EVT_BASIC_AUTH with
            # use_identity_as_username; the plugin reads the CN itself and
            # makes it the username (this later line overrides Broker's)
            "use_identity_as_username false",
            f"plugin {PLUGIN}",
            f"plugin_opt_jwt_secret_file {self.secret_file}",
            f"plugin_opt_record_file {self.record_file}",
            f"plugin_opt_jwt_lifetime {int(jwt_lifetime)}",
            f"plugin_opt_tenant {tenant}",
            f"plugin_opt_admin {','.join(admins)}",
            f"plugin_opt_max_payload {int(max_payload)}",
            f"plugin_opt_max_payload_header {'true' if max_payload_header else 'false'}",
        ]
        extra = list(broker_kw.pop("extra_conf", ()))
        self.broker = Broker(self.dir, pki, extra_conf=[*conf, *extra], **broker_kw)
        self._admin_cert = pki.client_cert(ADMIN_CN)
        d = self.dir / f"client-{ADMIN_CN}"
        self._admin_chain = self._admin_cert.write_chain(d / "chain.pem", "leaf+intermediate")
        self._admin_key = self._admin_cert.write_key(d / "key.pem")
        self._n = 0
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------
    def start(self, timeout: float = 10) -> "C8yCloud":
        self.broker.start(timeout)
        return self

    def stop(self, timeout: float = 10) -> Optional[int]:
        return self.broker.stop(timeout)

    def __enter__(self) -> "C8yCloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the record ----------------------------------------------------------
    def records(self, ev: Optional[str] = None,
                device: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every record so far (optionally of one kind and/or one device)."""
        return read_records(self.record_file, ev, device)

    def lines(self, device: str, prefix: Optional[str] = None) -> List[str]:
        """The SmartREST lines the platform accepted from `device`, in order."""
        return [r["line"] for r in self.records("line", device)
                if prefix is None or r["line"].startswith(prefix)]

    def wait_lines(self, device: str, pred: Callable[[str], bool] = lambda l: True,
                   n: int = 1, timeout: float = 15) -> List[str]:
        """Wait until `n` accepted lines of `device` satisfy `pred`."""
        def got():
            hits = [l for l in self.lines(device) if pred(l)]
            return hits if len(hits) >= n else None
        return wait_until(got, timeout, what=f"{n} accepted line(s) from {device!r}\n"
                          f"{self._tail()}")

    def rejections(self, device: str) -> List[Dict[str, Any]]:
        """Lines refused with an error on s/e: {line, code, error, ...}."""
        return self.records("rejected", device)

    def tokens(self, device: str) -> List[Dict[str, Any]]:
        """JWTs issued to `device`: {jti, iat, exp, new, token, delivered}."""
        return self.records("jwt", device)

    def wait_token(self, device: str, n: int = 1, timeout: float = 15) -> Dict[str, Any]:
        """Wait for the n-th token answer to `device`; returns that record."""
        def got():
            toks = self.tokens(device)
            return toks[n - 1] if len(toks) >= n else None
        return wait_until(got, timeout, what=f"token answer #{n} to {device!r}\n{self._tail()}")

    def _tail(self, k: int = 10) -> str:
        return "\n".join(json.dumps(r) for r in self.records()[-k:])

    # -- control (as admin "c8yadmin") ---------------------------------------
    def _admin_publish(self, topic: str, payload: bytes | str, timeout: float = 10) -> None:
        """Connect, publish at QoS 1, wait for the PUBACK, disconnect: once
        this returns, the plugin has handled the message."""
        with self._lock:
            self._n += 1
            client_id = f"{ADMIN_CN}-{os.getpid()}-{self._n}"
        admin_publish(self.broker, self._admin_chain, self._admin_key, client_id,
                      topic, payload, timeout)

    def send_operation(self, device: str, payload: str) -> None:
        """Send `payload` (e.g. "510,gw-0001") to `device` on s/ds. Queued by
        the plugin until the device published upstream and subscribed s/ds."""
        self._admin_publish(f"c8y/{device}/s/ds", payload)

    def send_dat(self, device: str, payload: str) -> None:
        """Send `payload` to `device` on s/dat (e.g. a malformed token answer)."""
        self._admin_publish(f"c8y/{device}/s/dat", payload)

    def send_error(self, device: str, payload: str) -> None:
        """Send `payload` to `device` on s/e."""
        self._admin_publish(f"c8y/{device}/s/e", payload)

    def control(self, **settings: Any) -> None:
        """Change the plugin at run time: uat="answer"|"ignore",
        jwt_lifetime=N, reject_connect=bool, max_payload=N,
        forget_tokens=True (next s/uat gets a new token), kick="<device>"."""
        self._admin_publish("c8y/control", json.dumps(settings))
