"""Cumulocity HTTPS REST test cloud: the parts of the platform a device uses.

Stdlib + python3-cryptography only (run with Debian's /usr/bin/python3).
Importable on its own (tests/harness/c8y_rest.py re-exports it), and runnable
as a script for manual experiments (see `main`).

What it serves (faithful to Cumulocity where the docs say what the platform
enforces; see tests/harness/README.md, section "C8yRest"):

  main listener (server auth only), every request needs `Authorization: Bearer <jwt>`
    GET  /identity/externalIds/c8y_Serial/<serial>
    POST /measurement/measurements   (measurement or measurementcollection media type)
  mTLS listener (client certificate from the Pki's root required, like :8443)
    POST /devicecontrol/deviceAccessToken  -> {"accessToken": <jwt for the cert CN>}

JWTs are HS256 with a shared secret (`mint_jwt` / `verify_jwt`), so the MQTT
emulator can hand out tokens (71,<jwt>) that this server accepts.

Never logs a token or any request header: the log (dir/c8y_rest.log) has one
line per request: time, listener, connection id, method, path, status, count.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and sys.path and \
        os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]  # run as a script: nothing in tests/cloud may shadow stdlib modules

import base64
import collections
import email.utils
import hashlib
import hmac
import http
import http.server
import json
import math
import re
import secrets
import socket
import ssl
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union
from urllib.parse import unquote, urlsplit

__all__ = [
    "C8yRest", "RequestRecord", "JwtError", "mint_jwt", "verify_jwt", "device_of",
    "ERROR_INFO_URL", "CT_MEASUREMENT", "CT_MEASUREMENT_COLLECTION", "CT_EXTERNAL_ID",
    "CT_ERROR",
]

ERROR_INFO_URL = ("https://cumulocity.com/guides/reference/rest-implementation/"
                  "#a-name-error-reporting-a-error-reporting")
CT_MEASUREMENT = "application/vnd.com.nsn.cumulocity.measurement+json"
CT_MEASUREMENT_COLLECTION = "application/vnd.com.nsn.cumulocity.measurementcollection+json"
CT_EXTERNAL_ID = "application/vnd.com.nsn.cumulocity.externalid+json;charset=UTF-8;ver=0.9"
CT_ERROR = "application/vnd.com.nsn.cumulocity.error+json;charset=UTF-8;ver=0.9"
# what the docs show for the deviceAccessToken answer (sic: managedobject)
CT_ACCESS_TOKEN = "application/vnd.com.nsn.cumulocity.managedobject+json;charset=UTF-8;ver=0.9"
_VER = ";charset=UTF-8;ver=0.9"

DEVICE_PREFIX = "device_"
FIRST_MO_ID = 10000
DEFAULT_MAX_BODY = 16 * 1024 * 1024


# ---------------------------------------------------------------------------
# JWT (HS256, shared secret)
# ---------------------------------------------------------------------------

class JwtError(ValueError):
    """A token that must be refused; str() is the reason (never the token)."""


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


_B64URL = re.compile(r"[A-Za-z0-9_-]*\Z")


def _b64d(text: str) -> bytes:
    if not _B64URL.match(text) or len(text) % 4 == 1:
        raise JwtError("malformed token (not base64url)")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: Union[bytes, str]) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


def _json_compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def mint_jwt(secret: Union[bytes, str], device: str, lifetime: float,
             tenant: str = "t100", now: Optional[float] = None, **extra: Any) -> str:
    """A Cumulocity-shaped device JWT for `device` (the certificate CN / serial).

    Header {"alg":"HS256","typ":"JWT"}; payload jti, iss "<tenant>.c8y.test",
    aud "c8y.test", sub "device_<device>", ten, tci, iat, nbf, exp (= now +
    lifetime), tfa false, xsrfToken; `extra` adds or overrides claims.
    `now` (epoch seconds) lets tests mint expired or not-yet-valid tokens.
    """
    now = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {
        "jti": str(uuid.uuid4()),
        "iss": f"{tenant}.c8y.test",
        "aud": "c8y.test",
        "sub": f"{DEVICE_PREFIX}{device}",
        "ten": tenant,
        "tci": str(uuid.uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime),
        "tfa": False,
        "xsrfToken": secrets.token_urlsafe(15),
    }
    payload.update(extra)
    signing_input = f"{_b64e(_json_compact(header))}.{_b64e(_json_compact(payload))}"
    sig = hmac.new(_key(secret), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64e(sig)}"


def verify_jwt(token: str, secret: Union[bytes, str], now: Optional[float] = None, *,
               tenant: Optional[str] = None, leeway: float = 0) -> Dict[str, Any]:
    """Check an HS256 token minted with `secret`; return its payload.

    Raises JwtError (reason only, never the token) for: malformed, alg other
    than HS256 (incl. "none"), bad signature, exp <= now, nbf > now, a `ten`
    other than `tenant` (when given).
    """
    if not isinstance(token, str):
        raise JwtError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        raise JwtError("malformed token (expected header.payload.signature)")
    try:
        header = json.loads(_b64d(parts[0]))
    except (ValueError, UnicodeDecodeError):
        raise JwtError("malformed token header") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtError("unsupported token algorithm")
    want = hmac.new(_key(secret), f"{parts[0]}.{parts[1]}".encode("ascii"),
                    hashlib.sha256).digest()
    if not hmac.compare_digest(want, _b64d(parts[2])):
        raise JwtError("invalid token signature")
    try:
        payload = json.loads(_b64d(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise JwtError("malformed token payload") from None
    if not isinstance(payload, dict):
        raise JwtError("malformed token payload")
    now = time.time() if now is None else now
    exp, nbf = payload.get("exp"), payload.get("nbf", payload.get("iat"))
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise JwtError("token without expiry")
    if now >= exp + leeway:
        raise JwtError("token expired")
    if isinstance(nbf, (int, float)) and not isinstance(nbf, bool) and nbf > now + leeway:
        raise JwtError("token not yet valid")
    if tenant is not None and payload.get("ten") != tenant:
        raise JwtError("token for another tenant")
    return payload


def device_of(payload: Dict[str, Any]) -> Optional[str]:
    """The device name (serial / certificate CN) of a verified payload."""
    sub = payload.get("sub")
    if isinstance(sub, str) and sub.startswith(DEVICE_PREFIX) and len(sub) > len(DEVICE_PREFIX):
        return sub[len(DEVICE_PREFIX):]
    return None


# ---------------------------------------------------------------------------
# measurement validation (what the platform enforces, see README)
# ---------------------------------------------------------------------------

_TIME_RE = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})\Z")
_RESERVED = frozenset(("id", "self", "source", "time", "type"))
_INT64 = 2 ** 63
_float, _int, _dict, _str = float, int, dict, str


def _time_ok(t: Any) -> bool:
    if type(t) is not _str or not _TIME_RE.match(t):
        return False
    try:
        datetime.fromisoformat(t)
    except ValueError:
        return False
    return True


class _Invalid(Exception):
    def __init__(self, status: int, error: str, message: str):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _validate(m: Any, moid: Optional[str], index: int) -> int:
    """Validate one posted measurement; return its number of series."""
    where = f"measurement {index}: " if index >= 0 else ""
    if type(m) is not _dict:
        raise _Invalid(422, "undefined/validationError", f"{where}not a JSON object")
    src = m.get("source")
    sid = src.get("id") if type(src) is _dict else None
    if sid is None:
        raise _Invalid(422, "undefined/validationError",
                       f"{where}Following mandatory fields should be included: source.id")
    if type(sid) is _int:
        sid = str(sid)
    elif type(sid) is not _str:
        raise _Invalid(422, "undefined/validationError", f"{where}source.id must be an ID")
    t = m.get("time")
    if t is None:
        raise _Invalid(422, "undefined/validationError",
                       f"{where}Following mandatory fields should be included: time")
    if not _time_ok(t):
        raise _Invalid(422, "undefined/validationError",
                       f"{where}time must be an ISO-8601 date-time with offset or Z")
    ty = m.get("type")
    if type(ty) is not _str or not ty:
        raise _Invalid(422, "undefined/validationError",
                       f"{where}Following mandatory fields should be included: type")
    n = 0
    for k, frag in m.items():
        if k in _RESERVED or type(frag) is not _dict:
            continue
        for s, ser in frag.items():
            if type(ser) is not _dict:
                raise _Invalid(422, "undefined/validationError",
                               f"{where}series {k}.{s} must be an object with a value")
            v = ser.get("value")
            tv = type(v)
            if tv is _float:
                if v != v or v in (math.inf, -math.inf):
                    raise _Invalid(422, "undefined/validationError",
                                   f"{where}series {k}.{s}: value must be finite")
            elif tv is _int:
                if not -_INT64 <= v < _INT64:
                    raise _Invalid(422, "undefined/validationError",
                                   f"{where}series {k}.{s}: value out of 64-bit range")
            else:
                raise _Invalid(422, "undefined/validationError",
                               f"{where}series {k}.{s}: value is mandatory and must be a number")
            u = ser.get("unit")
            if u is not None and type(u) is not _str:
                raise _Invalid(422, "undefined/validationError",
                               f"{where}series {k}.{s}: unit must be a string")
            n += 1
    if not n:
        raise _Invalid(422, "undefined/validationError",
                       f"{where}a measurement needs at least one fragment with a series "
                       "({\"<fragment>\": {\"<series>\": {\"value\": <number>}}})")
    if sid != moid:
        raise _Invalid(403, "security/Forbidden",
                       f"{where}source {sid} is not this device's managed object")
    return n


def _validate_all(items: list, moid: Optional[str]) -> int:
    """Validate a batch (fast path); on the first bad item raise the error
    `_validate` gives for it. Returns the number of series."""
    total = 0
    fromiso, match, reserved = datetime.fromisoformat, _TIME_RE.match, _RESERVED
    inf = math.inf
    for i, m in enumerate(items):
        try:
            sid = m["source"]["id"]
            if sid != moid and (type(sid) is not _int or str(sid) != moid):
                raise ValueError
            t = m["time"]
            if type(t) is not _str or not match(t):
                raise ValueError
            fromiso(t)
            ty = m["type"]
            if type(ty) is not _str or not ty:
                raise ValueError
            k = 0
            for key, frag in m.items():
                if type(frag) is _dict and key not in reserved:
                    for ser in frag.values():
                        v = ser["value"]
                        tv = type(v)
                        if tv is _float:
                            if not -inf < v < inf:  # NaN fails too
                                raise ValueError
                        elif tv is _int:
                            if not -_INT64 <= v < _INT64:
                                raise ValueError
                        else:
                            raise ValueError
                        u = ser.get("unit")
                        if u is not None and type(u) is not _str:
                            raise ValueError
                        k += 1
            if not k:
                raise ValueError
            total += k
        except (ValueError, KeyError, TypeError, AttributeError):
            total += _validate(m, moid, i)  # raises _Invalid with the reason
    return total


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _count_into(counter: collections.Counter, m: dict) -> None:
    src = m["source"]["id"]
    src = str(src)
    ty, t = m["type"], m["time"]
    for k, frag in m.items():
        if k in _RESERVED or type(frag) is not _dict:
            continue
        for s, ser in frag.items():
            counter[(src, ty, t, k, s, ser["value"])] += 1


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------

class RequestRecord(NamedTuple):
    time: float          # time.time() when the answer was sent
    method: str
    path: str            # without the query string
    status: int
    conn_id: int         # one id per TCP/TLS connection (keep-alive reuse keeps it)
    n_measurements: int  # measurements stored by this request (0 unless 201)
    listener: str        # "main" or "mtls"


class _HttpError(Exception):
    def __init__(self, status: int, error: str, message: str,
                 headers: Tuple[Tuple[str, str], ...] = (), close: bool = False,
                 body: Optional[bytes] = None):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.headers, self.close, self.body = headers, close, body


_conn_local = threading.local()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "c8y-test-cloud"
    sys_version = ""
    disable_nagle_algorithm = True

    def setup(self) -> None:
        self.timeout = self.server.emu.idle_timeout
        super().setup()
        self.conn_id = getattr(_conn_local, "conn_id", 0)

    def log_message(self, fmt: str, *args: Any) -> None:  # http.server's own errors
        self.server.emu._log(f"{self.server.kind} conn={self.conn_id} {fmt % args}")

    def _dispatch(self) -> None:
        self.server.emu._handle(self, self.server.kind)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _dispatch


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, emu: "C8yRest", ctx: ssl.SSLContext, kind: str):
        self.emu, self.ssl_ctx, self.kind = emu, ctx, kind
        super().__init__(addr, _Handler)

    def process_request(self, request, client_address):
        conn_id = self.emu._accepted(self.kind)
        t = threading.Thread(target=self._conn_thread, args=(request, client_address, conn_id),
                             name=f"c8y-rest-{self.kind}-{conn_id}", daemon=True)
        t.start()

    def _conn_thread(self, sock: socket.socket, addr, conn_id: int) -> None:
        emu = self.emu
        try:
            sock.settimeout(10)
            ssock = self.ssl_ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            emu._handshake_failed(self.kind, conn_id, e)
            try:
                sock.close()
            except OSError:
                pass
            return
        emu._open(ssock)
        try:
            _conn_local.conn_id = conn_id
            self.RequestHandlerClass(ssock, addr, self)
        except (OSError, ValueError):
            pass  # peer went away, or we closed it in stop()/drop_connections()
        except Exception as e:  # pragma: no cover - a bug in the emulator
            emu._log(f"{self.kind} conn={conn_id} handler crashed: {e!r}")
        finally:
            emu._closed(ssock)
            try:
                ssock.close()
            except OSError:
                pass

    # the request socket is closed by _conn_thread, not by socketserver
    def shutdown_request(self, request):  # pragma: no cover - not reached
        pass


def _media_type(value: Optional[str]) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------
# the emulator
# ---------------------------------------------------------------------------

class C8yRest:
    """Cumulocity REST test cloud over HTTPS (HTTP/1.1 keep-alive), see module doc.

    dir        where the server chain/key, the CA file and the log go
    pki        tests/harness Pki (duck-typed: .server_cert(), .root_file)
    secret     shared HS256 secret (the MQTT emulator mints with the same)
    tenant     expected `ten` claim; iss is "<tenant>.c8y.test"
    mtls_port  also run the mTLS listener (POST /devicecontrol/deviceAccessToken)
    port, mtls_listen_port   fixed ports (0: free ones; kept across stop/start)
    server     Issued to use as server cert (default pki.server_cert())
    client_ca_file   CAs trusted for client certs on the mTLS listener (default pki.root_file)
    token_lifetime   seconds for tokens minted by the mTLS endpoint (platform default 3600)
    auto_register    a valid JWT for device_<serial> registers <serial> (ids from 10000)
    record     True/"full" (default): keep every accepted body as bytes (~130 B per
               measurement); measurements()/counts() parse them lazily (1M: ~6 s).
               "counter": update the counts() Counter while ingesting, keep no
               bodies (slower ingest, instant counts(), memory like counts()).
               False/"none": validate and count totals only (.total, .total_for)
    count_only alias for record="none" (validate and count, store nothing)
    max_body   request bodies above this answer 413 (connection closed)
    idle_timeout  keep-alive connections idle this long are closed by the server
    echo_without_accept   the platform returns an empty body on POST without an
               Accept header; True returns the JSON body anyway
    """

    def __init__(self, dir: Union[str, Path], pki: Any, *, secret: Union[bytes, str],
                 tenant: str = "t100", host: str = "127.0.0.1", mtls_port: bool = True,
                 port: int = 0, mtls_listen_port: int = 0, server: Any = None,
                 client_ca_file: Union[str, Path, None] = None, token_lifetime: float = 3600,
                 auto_register: bool = True, record: Union[bool, str] = True,
                 count_only: bool = False, max_body: int = DEFAULT_MAX_BODY,
                 idle_timeout: float = 60.0, echo_without_accept: bool = False,
                 log: bool = True):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.secret = _key(secret)
        self.tenant = tenant
        self.host = host
        self.mtls_enabled = bool(mtls_port)
        self.port = int(port)
        self.mtls_port: Optional[int] = int(mtls_listen_port) if self.mtls_enabled else None
        self.token_lifetime = float(token_lifetime)
        self.auto_register = auto_register
        if count_only:
            record = "none"
        self.record = {True: "full", False: "none"}.get(record, record)
        if self.record not in ("full", "counter", "none"):
            raise ValueError(f"record must be True, False, 'full', 'counter' or 'none', "
                             f"not {record!r}")
        self.max_body = int(max_body)
        self.idle_timeout = idle_timeout
        self.echo_without_accept = echo_without_accept

        self.server_cert = server or pki.server_cert()
        self.server_chain_file = self.server_cert.write_chain(
            self.dir / "rest-server-chain.pem", "leaf+intermediate")
        self.server_key_file = self.server_cert.write_key(self.dir / "rest-server.key")
        self.ca_file = self.dir / "rest-server-ca.pem"
        root = self.server_cert.chain[-1]
        from cryptography.hazmat.primitives import serialization
        self.ca_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        self.client_ca_file = Path(client_ca_file) if client_ca_file else Path(pki.root_file)
        self.log_file = self.dir / "c8y_rest.log" if log else None
        self._log_fh = None

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._servers: List[_Server] = []
        self._threads: List[threading.Thread] = []
        self._open_socks: set = set()
        self.clear()
        self._next_mo = FIRST_MO_ID
        self._next_measurement = 1
        self._devices: Dict[str, str] = {}     # serial -> managed object id
        self._next_conn = 0

    # -- lifecycle -----------------------------------------------------------
    def _ssl_context(self, client_auth: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(self.server_chain_file), str(self.server_key_file))
        if client_auth:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(self.client_ca_file))
        return ctx

    def start(self) -> "C8yRest":
        if self._servers:
            return self
        if self.log_file and self._log_fh is None:
            self._log_fh = open(self.log_file, "a", buffering=1)
        listeners = [("main", self.port, False)]
        if self.mtls_enabled:
            listeners.append(("mtls", self.mtls_port or 0, True))
        for kind, port, client_auth in listeners:
            srv = _Server((self.host, port), self, self._ssl_context(client_auth), kind)
            bound = srv.server_address[1]
            if kind == "main":
                self.port = bound
            else:
                self.mtls_port = bound
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"c8y-rest-{kind}", daemon=True)
            t.start()
            self._servers.append(srv)
            self._threads.append(t)
        self._log(f"listening main={self.url} mtls={self.mtls_url}")
        return self

    def stop(self) -> None:
        """Stop both listeners and close every open connection (ports are kept
        for a later start())."""
        servers, self._servers = self._servers, []
        for srv in servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(5)
        self._threads = []
        self.drop_connections()
        if self._log_fh:
            self._log_fh.close()
            self._log_fh = None

    close = stop

    def restart(self, down_for: float = 0.0) -> "C8yRest":
        self.stop()
        if down_for:
            time.sleep(down_for)
        return self.start()

    def __enter__(self) -> "C8yRest":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._servers)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def mtls_url(self) -> Optional[str]:
        return f"https://{self.host}:{self.mtls_port}" if self.mtls_enabled else None

    def drop_connections(self) -> int:
        """Close every open client connection now (like a load balancer
        restart); returns how many were open."""
        with self._lock:
            socks = list(self._open_socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(socks)

    # -- controls ------------------------------------------------------------
    def clear(self) -> None:
        """Forget recorded traffic and faults (devices and their ids stay)."""
        with self._lock:
            self._faults: collections.deque = collections.deque()
            self._delay = 0.0
            self._available = True
            self._bodies: List[Tuple[str, bytes, bool]] = []  # (moid, body, is_collection)
            self._parsed: List[dict] = []
            self._parsed_upto = 0
            self._counter: collections.Counter = collections.Counter()
            self._counted_upto = 0
            self._total = 0
            self._per_source: collections.Counter = collections.Counter()
            self._requests: List[RequestRecord] = []
            self._connections = {"main": 0, "mtls": 0}
            self._handshake_failures: List[Tuple[float, str, str]] = []
            self._tokens_seen: set = set()
            self._auth_failures: List[Tuple[float, str, str]] = []
            self._issued: List[Tuple[str, str]] = []

    def fail_next(self, n: int, status: int, *, retry_after: Optional[Union[int, str]] = None,
                  body: Optional[Union[bytes, str, dict]] = None) -> None:
        """The next `n` measurement POSTs answer `status` (before auth and
        validation; nothing is stored). `retry_after` adds Retry-After;
        `body` replaces the default Cumulocity error JSON."""
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        with self._lock:
            for _ in range(n):
                self._faults.append((status, retry_after, body))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_delay(self, seconds: float) -> None:
        """Delay every response (both listeners) by `seconds`."""
        self._delay = float(seconds)

    def set_available(self, available: bool) -> None:
        """False: POST /measurement/measurements answers 503."""
        self._available = bool(available)

    def set_token_lifetime(self, seconds: float) -> None:
        self.token_lifetime = float(seconds)

    def register(self, serial: str) -> str:
        """Make `serial` a known device (c8y_Serial external id); returns its
        managed object id (stable, from 10000 up)."""
        with self._lock:
            return self._register_locked(serial)

    def _register_locked(self, serial: str) -> str:
        moid = self._devices.get(serial)
        if moid is None:
            moid = str(self._next_mo)
            self._next_mo += 1
            self._devices[serial] = moid
        return moid

    def mo_id(self, serial: str) -> Optional[str]:
        """Managed object id of `serial`, None while it is unknown."""
        with self._lock:
            return self._devices.get(serial)

    def mint(self, device: str, lifetime: Optional[float] = None, now: Optional[float] = None,
             **extra: Any) -> str:
        """A token this server accepts (same as the MQTT emulator's)."""
        return mint_jwt(self.secret, device,
                        self.token_lifetime if lifetime is None else lifetime,
                        tenant=self.tenant, now=now, **extra)

    # -- assertions ----------------------------------------------------------
    def _source_of(self, device: Optional[str]) -> Optional[str]:
        if device is None:
            return None
        with self._lock:
            return self._devices.get(device, str(device))

    def measurements(self, device: Optional[str] = None) -> List[dict]:
        """Stored measurements as posted (dicts), in arrival order; `device`
        is a serial or a managed object id. Needs record="full"."""
        if self.record != "full":
            raise RuntimeError(f"measurements() needs record='full' (this one: {self.record!r})")
        src = self._source_of(device)
        with self._lock:
            bodies = self._bodies[self._parsed_upto:]
            self._parsed_upto += len(bodies)
            for _, body, coll in bodies:
                obj = json.loads(body)
                if coll:
                    self._parsed.extend(obj["measurements"])
                else:
                    self._parsed.append(obj)
            out = list(self._parsed)
        if src is None:
            return out
        return [m for m in out if str(m["source"]["id"]) == src]

    def counts(self) -> collections.Counter:
        """Counter of (source, type, time, fragment, series, value) over every
        stored series value: each should be 1 when nothing was duplicated.
        Needs record="full" or "counter"."""
        if self.record == "none":
            raise RuntimeError("counts() needs record='full' or 'counter'")
        with self._lock:
            if self.record == "full":
                bodies = self._bodies[self._counted_upto:]
                self._counted_upto += len(bodies)
                for _, body, coll in bodies:
                    obj = json.loads(body)
                    for m in (obj["measurements"] if coll else (obj,)):
                        _count_into(self._counter, m)
            return collections.Counter(self._counter)

    @property
    def total(self) -> int:
        """Measurements stored so far (every record mode)."""
        return self._total

    def total_for(self, device: str) -> int:
        src = self._source_of(device)
        with self._lock:
            return self._per_source.get(src, 0)

    def wait_measurements(self, n: int, timeout: float = 30, device: Optional[str] = None) -> int:
        """Wait until at least `n` measurements are stored (for `device` if
        given); return the count, raise TimeoutError otherwise."""
        src = self._source_of(device)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                have = self._total if src is None else self._per_source.get(src, 0)
                if have >= n:
                    return have
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {n} "
                                       f"measurements (have {have})")
                self._cond.wait(min(left, 0.5))

    def wait_requests(self, pred: Callable[[RequestRecord], bool], n: int = 1,
                      timeout: float = 30) -> List[RequestRecord]:
        """Wait until `n` recorded requests satisfy `pred`; return them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [r for r in self._requests if pred(r)]
                if len(hits) >= n:
                    return hits
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {n} "
                                       f"matching requests (have {len(hits)})")
                self._cond.wait(min(left, 0.5))

    @property
    def requests(self) -> List[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """TCP connections accepted by the main listener (handshake or not)."""
        return self._connections["main"]

    @property
    def mtls_connections(self) -> int:
        return self._connections["mtls"]

    @property
    def handshake_failures(self) -> List[Tuple[float, str, str]]:
        """(time, listener, reason) of TLS handshakes that failed."""
        with self._lock:
            return list(self._handshake_failures)

    @property
    def tokens_seen(self) -> set:
        """jti of every valid token presented on the main listener."""
        with self._lock:
            return set(self._tokens_seen)

    @property
    def auth_failures(self) -> List[Tuple[float, str, str]]:
        """(time, path, reason) of every 401 the server gave (no tokens)."""
        with self._lock:
            return list(self._auth_failures)

    @property
    def issued_tokens(self) -> List[Tuple[str, str]]:
        """(device, jti) of tokens handed out by the mTLS endpoint."""
        with self._lock:
            return list(self._issued)

    # -- internals: connection bookkeeping ----------------------------------
    def _log(self, line: str) -> None:
        fh = self._log_fh
        if fh is not None:
            try:
                fh.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} "
                         f"{line}\n")
            except ValueError:
                pass

    def _accepted(self, kind: str) -> int:
        with self._lock:
            self._connections[kind] += 1
            self._next_conn += 1
            return self._next_conn

    def _handshake_failed(self, kind: str, conn_id: int, e: Exception) -> None:
        reason = getattr(e, "reason", None) or type(e).__name__
        with self._lock:
            self._handshake_failures.append((time.time(), kind, str(reason)))
        self._log(f"{kind} conn={conn_id} TLS handshake failed: {reason}")

    def _open(self, s) -> None:
        with self._lock:
            self._open_socks.add(s)

    def _closed(self, s) -> None:
        with self._lock:
            self._open_socks.discard(s)

    # -- internals: requests -------------------------------------------------
    def _read_body(self, h: _Handler) -> bytes:
        te = (h.headers.get("Transfer-Encoding") or "").lower()
        if te and te != "identity":
            if te != "chunked":
                raise _HttpError(501, "general/notImplemented",
                                 f"Transfer-Encoding {te} not supported", close=True)
            return self._read_chunked(h)
        cl = h.headers.get("Content-Length")
        if cl is None:
            return b""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            raise _HttpError(400, "general/badRequest", "bad Content-Length", close=True)
        if n > self.max_body:
            raise _HttpError(413, "general/requestEntityTooLarge",
                             f"request body of {n} bytes exceeds {self.max_body}", close=True)
        body = h.rfile.read(n)
        if len(body) != n:
            raise ConnectionError("peer closed mid-body")
        return body

    def _read_chunked(self, h: _Handler) -> bytes:
        parts, size = [], 0
        while True:
            line = h.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ConnectionError("bad chunk header")
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _HttpError(400, "general/badRequest", "bad chunk size", close=True)
            if n == 0:
                while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            size += n
            if size > self.max_body:
                raise _HttpError(413, "general/requestEntityTooLarge",
                                 f"request body exceeds {self.max_body} bytes", close=True)
            data = h.rfile.read(n)
            if len(data) != n:
                raise ConnectionError("peer closed mid-chunk")
            parts.append(data)
            h.rfile.readline(3)

    def _send(self, h: _Handler, status: int, body: bytes = b"", ctype: Optional[str] = None,
              headers: Tuple[Tuple[str, str], ...] = (), count: int = 0) -> None:
        delay = self._delay
        if delay > 0:
            time.sleep(delay)
        self._record(h, status, count)
        lines = [f"HTTP/1.1 {status} {_reason(status)}",
                 f"Date: {email.utils.formatdate(usegmt=True)}",
                 f"Server: {h.server_version}",
                 f"Content-Length: {len(body)}"]
        if ctype and (body or status >= 400):
            lines.append(f"Content-Type: {ctype}")
        lines.extend(f"{k}: {v}" for k, v in headers)
        if h.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if h.command == "HEAD":
            body = b""
        h.wfile.write(head + body)

    def _error_body(self, error: str, message: str) -> bytes:
        return json.dumps({"error": error, "message": message, "info": ERROR_INFO_URL}).encode()

    def _record(self, h: _Handler, status: int, count: int) -> None:
        """Log the request before its answer leaves, so that a client that
        has the answer also finds the request in .requests."""
        if getattr(h, "_recorded", False):
            return
        h._recorded = True
        rec = RequestRecord(time.time(), h.command or "?", h._path, status, h.conn_id, count,
                            h.server.kind)
        with self._cond:
            self._requests.append(rec)
            self._cond.notify_all()
        self._log(f"{rec.listener} conn={h.conn_id} {rec.method} {rec.path} {status} n={count}")

    def _handle(self, h: _Handler, kind: str) -> None:
        path = h._path = urlsplit(h.path).path
        h._recorded = False
        status, count = 500, 0
        try:
            try:
                body = self._read_body(h)
                if kind == "mtls":
                    status, count = self._route_mtls(h, path, body)
                else:
                    status, count = self._route_main(h, path, body)
            except _HttpError as e:
                status = e.status
                if e.close:
                    h.close_connection = True
                self._send(h, e.status, e.body if e.body is not None
                           else self._error_body(e.error, e.message), CT_ERROR, e.headers)
                if e.close:
                    self._linger(h)
        except ConnectionError:
            status = 0
            h.close_connection = True
        finally:
            self._record(h, status, count)

    @staticmethod
    def _linger(h: _Handler) -> None:
        """After an early error answer with an unread body: stop sending,
        then swallow what the client still sends so that the kernel does
        not reset the connection before the client has read our answer."""
        try:
            h.wfile.flush()
            sock = h.connection
            sock.settimeout(1.0)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                if not sock.recv(65536):
                    break
        except (OSError, ValueError):
            pass

    # main listener ----------------------------------------------------------
    def _authenticate(self, h: _Handler, path: str) -> Tuple[str, Optional[str]]:
        """Return (device, moid) for a valid bearer token or raise 401."""
        auth = h.headers.get("Authorization")
        reason = None
        if not auth:
            reason = "Full authentication is required to access this resource"
        else:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                reason = "Bearer token required"
            else:
                try:
                    payload = verify_jwt(token.strip(), self.secret, tenant=self.tenant)
                except JwtError as e:
                    reason = f"Invalid token: {e}"
                else:
                    device = device_of(payload)
                    if device is None:
                        reason = "Invalid token: not a device token"
        if reason is not None:
            with self._lock:
                self._auth_failures.append((time.time(), path, reason))
            raise _HttpError(401, "security/Unauthorized", reason,
                             (("WWW-Authenticate",
                               'Bearer realm="Cumulocity", error="invalid_token"'),))
        with self._lock:
            jti = payload.get("jti")
            if jti is not None:
                self._tokens_seen.add(str(jti))
            moid = (self._register_locked(device) if self.auto_register
                    else self._devices.get(device))
        return device, moid

    def _route_main(self, h: _Handler, path: str, body: bytes) -> Tuple[int, int]:
        if path == "/measurement/measurements":
            if h.command != "POST":
                raise _HttpError(405, "general/methodNotAllowed",
                                 f"{h.command} not supported here by the test cloud",
                                 (("Allow", "POST"),))
            return self._post_measurements(h, path, body)
        prefix = "/identity/externalIds/"
        if path.startswith(prefix):
            if h.command != "GET":
                raise _HttpError(405, "general/methodNotAllowed",
                                 f"{h.command} not supported here by the test cloud",
                                 (("Allow", "GET"),))
            return self._get_external_id(h, path, path[len(prefix):])
        raise _HttpError(404, "general/notFound", f"Unknown resource {path}")

    def _get_external_id(self, h: _Handler, path: str, rest: str) -> Tuple[int, int]:
        device, _ = self._authenticate(h, path)
        typ, _, value = rest.partition("/")
        typ, value = unquote(typ), unquote(value)
        if not typ or not value or "/" in value:
            raise _HttpError(404, "general/notFound", f"Unknown resource {path}")
        if typ != "c8y_Serial" or value != device:
            raise _HttpError(403, "security/Forbidden",
                             "Access is denied: a device may only look up its own c8y_Serial")
        moid = self.mo_id(value)
        if moid is None:
            raise _HttpError(404, "identity/Not Found",
                             f"External id not found; external id = ID [type={typ}, value={value}]")
        base = self.url
        out = {
            "externalId": value, "type": typ,
            "self": f"{base}/identity/externalIds/{typ}/{value}",
            "managedObject": {"id": moid, "self": f"{base}/inventory/managedObjects/{moid}"},
        }
        self._send(h, 200, json.dumps(out).encode(), CT_EXTERNAL_ID)
        return 200, 0

    def _post_measurements(self, h: _Handler, path: str, body: bytes) -> Tuple[int, int]:
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            status, retry_after, fbody = fault
            hdrs = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
            if status == 401:
                hdrs += (("WWW-Authenticate", 'Bearer realm="Cumulocity", error="invalid_token"'),)
            errs = {401: "security/Unauthorized", 403: "security/Forbidden",
                    429: "general/tooManyRequests", 503: "general/serviceUnavailable"}
            raise _HttpError(status, errs.get(status, "general/internalError" if status >= 500
                                              else "general/badRequest"),
                             "injected fault", hdrs, body=fbody)
        if not self._available:
            raise _HttpError(503, "general/serviceUnavailable",
                             "measurement service temporarily unavailable")
        device, moid = self._authenticate(h, path)
        ctype = _media_type(h.headers.get("Content-Type"))
        if ctype == CT_MEASUREMENT_COLLECTION:
            coll = True
        elif ctype == CT_MEASUREMENT:
            coll = False
        else:
            raise _HttpError(415, "general/unsupportedMediaType",
                             f"Content type '{ctype or '(none)'}' not supported; use "
                             f"{CT_MEASUREMENT_COLLECTION} or {CT_MEASUREMENT}")
        try:
            obj = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as e:
            raise _HttpError(422, "undefined/validationError",
                             f"Could not parse the request body as JSON: {e}") from None
        try:
            if coll:
                items = obj.get("measurements") if type(obj) is dict else None
                if type(items) is not list:
                    raise _Invalid(422, "undefined/validationError",
                                   "a measurement collection needs a \"measurements\" array")
                _validate_all(items, moid)
            else:
                items = [obj]
                _validate(obj, moid, -1)
        except _Invalid as e:
            raise _HttpError(e.status, e.error, e.message) from None
        n = len(items)
        with self._cond:
            first = self._next_measurement
            self._next_measurement += n
            if self.record == "full":
                self._bodies.append((moid, body, coll))
            elif self.record == "counter":
                for m in items:
                    _count_into(self._counter, m)
            self._total += n
            self._per_source[moid] += n
            self._cond.notify_all()
        if h.headers.get("Accept") or self.echo_without_accept:
            base = f"{self.url}/measurement/measurements/"
            if coll:
                # ids and links only (the platform echoes whole measurements)
                ids = ",".join([f'{{"id":"{i}","self":"{base}{i}"}}'
                                for i in range(first, first + n)])
                out = (f'{{"measurements":[{ids}],'
                       f'"self":"{self.url}/measurement/measurements"}}').encode()
                self._send(h, 201, out, CT_MEASUREMENT_COLLECTION + _VER, count=n)
            else:
                out = dict(obj, id=str(first), self=f"{base}{first}")
                self._send(h, 201, json.dumps(out, separators=(",", ":")).encode(),
                           CT_MEASUREMENT + _VER,
                           (("Location", f"{base}{first}"),), count=n)
        else:
            self._send(h, 201, b"", count=n)
        return 201, n

    # mTLS listener ----------------------------------------------------------
    def _route_mtls(self, h: _Handler, path: str, body: bytes) -> Tuple[int, int]:
        if path != "/devicecontrol/deviceAccessToken":
            raise _HttpError(404, "general/notFound", f"Unknown resource {path}")
        if h.command != "POST":
            raise _HttpError(405, "general/methodNotAllowed", f"{h.command} not supported",
                             (("Allow", "POST"),))
        cert = h.connection.getpeercert() or {}
        cn = None
        for rdn in cert.get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    cn = v
        if not cn:
            raise _HttpError(401, "security/Unauthorized",
                             "client certificate without a common name")
        token = mint_jwt(self.secret, cn, self.token_lifetime, tenant=self.tenant)
        jti = verify_jwt(token, self.secret)["jti"]
        with self._lock:
            self._issued.append((cn, jti))
            if self.auto_register:
                self._register_locked(cn)
        self._send(h, 200, json.dumps({"accessToken": token}).encode(), CT_ACCESS_TOKEN)
        return 200, 0


# ---------------------------------------------------------------------------
# script use: /usr/bin/python3 tests/cloud/c8y_rest.py --dir D --pki-dir P --secret S
# ---------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:  # pragma: no cover - manual use
    import argparse
    import signal
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dir", required=True, help="state directory (certs, log)")
    ap.add_argument("--pki-dir", required=True, help="a directory written by harness Pki(dir)")
    ap.add_argument("--secret", required=True, help="shared JWT secret")
    ap.add_argument("--tenant", default="t100")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mtls-port", type=int, default=0)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from harness.pki import Pki
    emu = C8yRest(args.dir, Pki.load(args.pki_dir), secret=args.secret.encode(),
                  tenant=args.tenant, port=args.port, mtls_listen_port=args.mtls_port)
    emu.start()
    print(f"url {emu.url}\nmtls_url {emu.mtls_url}\nca_file {emu.ca_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    while not stop.wait(1):
        pass
    emu.stop()
    print(f"stored {emu.total} measurements", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
