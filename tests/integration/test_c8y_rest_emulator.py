"""Self-tests of the Cumulocity REST test cloud (tests/cloud/c8y_rest.py) and
of the TCP delay proxy (tests/harness/delayproxy.py). No daemon needed."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time

import pytest

from harness import C8yRest, DelayProxy, JwtError, mint_jwt, verify_jwt
from harness.c8y_rest import (CT_ERROR, CT_EXTERNAL_ID, CT_MEASUREMENT,
                              CT_MEASUREMENT_COLLECTION, ERROR_INFO_URL)
from harness.util import REPO_ROOT, free_port

PY = "/usr/bin/python3"
SECRET = b"test-cloud-shared-secret"
GW = "gw-rest-1"


# -- helpers -----------------------------------------------------------------

@pytest.fixture
def emu(tmp_path, pki):
    e = C8yRest(tmp_path / "c8y", pki, secret=SECRET)
    e.start()
    yield e
    e.stop()


_clients = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _clients:
        _clients.pop().close()


def client(emu, port=None, cert=None, timeout=10) -> http.client.HTTPSConnection:
    ctx = ssl.create_default_context(cafile=str(emu.ca_file))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    c = http.client.HTTPSConnection("127.0.0.1", port or emu.port, context=ctx,
                                    timeout=timeout)
    _clients.append(c)
    return c


def call(conn, method, path, body=None, token=None, ctype=None, accept="application/json",
         headers=None):
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    if ctype is not None:
        h["Content-Type"] = ctype
    if accept is not None:
        h["Accept"] = accept
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    conn.request(method, path, body, headers=h)
    r = conn.getresponse()
    data = r.read()
    return r, data


def meas(moid, i=0, *, t=None, typ="c8y_Temperature", value=None, **extra):
    m = {"source": {"id": moid}, "time": t or f"2024-05-01T10:00:{i % 60:02d}.{i:06d}+02:00",
         "type": typ, "c8y_Temperature": {"T": {"value": 20.5 + i if value is None else value,
                                                "unit": "C"}}}
    m.update(extra)
    return m


def post_coll(conn, token, items, **kw):
    return call(conn, "POST", "/measurement/measurements", {"measurements": items}, token,
                CT_MEASUREMENT_COLLECTION, **kw)


def write_client_cert(pki, tmp_path, cn):
    issued = pki.client_cert(cn)
    chain = issued.write_chain(tmp_path / f"{cn}.pem", "leaf+intermediate")
    key = issued.write_key(tmp_path / f"{cn}.key")
    return str(chain), str(key)


# -- JWT -----------------------------------------------------------------------

def test_jwt_mint_and_verify():
    tok = mint_jwt(SECRET, GW, 60, tenant="t7")
    head, payload, sig = tok.split(".")
    assert "=" not in tok
    assert json.loads(base64.urlsafe_b64decode(head + "==")) == {"alg": "HS256", "typ": "JWT"}
    p = verify_jwt(tok, SECRET, tenant="t7")
    assert p["sub"] == f"device_{GW}" and p["ten"] == "t7" and p["iss"] == "t7.c8y.test"
    assert p["aud"] == "c8y.test" and p["tfa"] is False and p["exp"] - p["iat"] == 60
    assert {"jti", "tci", "nbf", "xsrfToken"} <= p.keys()
    for bad, why in [(tok[:-2] + ("AA" if tok[-2:] != "AA" else "BB"), "signature"),
                     (tok, "expired")]:
        with pytest.raises(JwtError, match=why):
            verify_jwt(bad, SECRET, now=time.time() + (3600 if why == "expired" else 0))
    with pytest.raises(JwtError, match="signature"):
        verify_jwt(tok, b"other secret")
    with pytest.raises(JwtError, match="not yet valid"):
        verify_jwt(mint_jwt(SECRET, GW, 60, now=time.time() + 600), SECRET)
    with pytest.raises(JwtError, match="tenant"):
        verify_jwt(tok, SECRET, tenant="t100")
    none_alg = (base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
                + "." + payload + ".")
    with pytest.raises(JwtError):
        verify_jwt(none_alg, SECRET)


# -- authentication ------------------------------------------------------------

def test_401_cases(emu):
    c = client(emu)
    expired = emu.mint(GW, lifetime=60, now=time.time() - 3600)
    future = emu.mint(GW, lifetime=600, now=time.time() + 300)
    forged = mint_jwt(b"not the secret", GW, 600)
    other_tenant = mint_jwt(SECRET, GW, 600, tenant="t999")
    cases = [(None, "Full authentication"), (forged, "signature"), (expired, "expired"),
             (future, "not yet valid"), (other_tenant, "tenant"), ("garbage", "malformed")]
    for tok, why in cases:
        for method, path in [("GET", f"/identity/externalIds/c8y_Serial/{GW}"),
                             ("POST", "/measurement/measurements")]:
            r, data = call(c, method, path, {"measurements": []} if method == "POST" else None,
                           tok, CT_MEASUREMENT_COLLECTION if method == "POST" else None)
            assert r.status == 401, (why, method, data)
            assert r.getheader("Content-Type") == CT_ERROR
            assert r.getheader("WWW-Authenticate", "").startswith("Bearer")
            err = json.loads(data)
            assert err["error"] == "security/Unauthorized" and why in err["message"]
            assert err["info"] == ERROR_INFO_URL
    r, _ = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}",
                headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status == 401
    assert emu.mo_id(GW) is None, "a refused token must not register the device"
    assert len(emu.auth_failures) == 2 * len(cases) + 1
    assert emu.connections == 1  # 401 keeps the connection usable
    log = emu.log_file.read_text()
    for tok, _ in cases:
        if tok:
            assert tok not in log and tok.split(".")[-1] not in log


# -- identity ------------------------------------------------------------------

def test_identity_lookup(emu):
    c = client(emu)
    tok = emu.mint(GW)
    r, data = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
    assert r.status == 200
    assert r.getheader("Content-Type") == CT_EXTERNAL_ID
    body = json.loads(data)
    moid = emu.mo_id(GW)
    assert moid == "10000"
    assert body["externalId"] == GW and body["type"] == "c8y_Serial"
    assert body["managedObject"]["id"] == moid and body["self"].endswith(f"/c8y_Serial/{GW}")
    assert body["managedObject"]["self"].endswith(f"/inventory/managedObjects/{moid}")
    # stable id; a second device gets the next one
    call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=emu.mint(GW))
    assert emu.mo_id(GW) == moid
    call(c, "GET", "/identity/externalIds/c8y_Serial/gw-2", token=emu.mint("gw-2"))
    assert emu.mo_id("gw-2") == "10001"
    # a device may only look itself up
    for other in ("gw-2", "nobody"):
        r, data = call(c, "GET", f"/identity/externalIds/c8y_Serial/{other}", token=tok)
        assert r.status == 403 and json.loads(data)["error"] == "security/Forbidden"
    assert jti_of(tok) in emu.tokens_seen


def jti_of(tok):
    return verify_jwt(tok, SECRET)["jti"]


def test_identity_unknown_serial_404(tmp_path, pki):
    with C8yRest(tmp_path / "c8y", pki, secret=SECRET, auto_register=False,
                 mtls_port=False) as e:
        assert e.mtls_url is None
        c = client(e)
        r, data = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=e.mint(GW))
        assert r.status == 404 and json.loads(data)["error"] == "identity/Not Found"
        moid = e.register(GW)
        r, data = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=e.mint(GW))
        assert r.status == 200 and json.loads(data)["managedObject"]["id"] == moid


# -- measurements --------------------------------------------------------------

def test_collection_stored_and_counted(emu):
    c = client(emu)
    tok = emu.mint(GW)
    moid = emu.register(GW)
    items = [meas(moid, i) for i in range(5)]
    items[1]["source"]["id"] = int(moid)  # numeric ids are fine
    items[2]["c8y_Voltage"] = {"L1": {"value": 230}, "L2": {"value": -1.5e-3, "unit": "V"}}
    r, data = post_coll(c, tok, items)
    assert r.status == 201, data
    assert r.getheader("Content-Type").startswith(CT_MEASUREMENT_COLLECTION)
    ids = [m["id"] for m in json.loads(data)["measurements"]]
    assert len(ids) == len(set(ids)) == 5
    # single measurement media type
    single = meas(moid, 7, t="2024-05-01T08:00:07Z")
    r, data = call(c, "POST", "/measurement/measurements", single, tok,
                   CT_MEASUREMENT + ";charset=UTF-8;ver=0.9")
    assert r.status == 201 and json.loads(data)["id"] not in ids
    assert r.getheader("Location")
    # like the platform: no Accept header -> 201 with an empty body
    r, data = post_coll(c, tok, [meas(moid, 8)], accept=None)
    assert r.status == 201 and data == b""

    assert emu.total == 7 and emu.total_for(GW) == 7 and emu.total_for(moid) == 7
    stored = emu.measurements()
    assert len(stored) == 7 and stored[0] == items[0] and stored[5] == single
    assert emu.measurements(GW) == stored and emu.measurements("99999") == []
    counts = emu.counts()
    assert sum(counts.values()) == 9  # 7 temperatures + 2 voltage series
    assert set(counts.values()) == {1}
    assert counts[(moid, "c8y_Temperature", items[1]["time"], "c8y_Temperature", "T",
                   items[1]["c8y_Temperature"]["T"]["value"])] == 1
    assert counts[(moid, "c8y_Temperature", items[2]["time"], "c8y_Voltage", "L1", 230)] == 1
    assert [rq.n_measurements for rq in emu.requests] == [5, 1, 1]
    assert emu.wait_measurements(7, timeout=1) == 7
    with pytest.raises(TimeoutError):
        emu.wait_measurements(8, timeout=0.2)


def test_validation_415_422_403_whole_batch(emu):
    c = client(emu)
    tok = emu.mint(GW)
    moid = emu.register(GW)
    other = emu.register("gw-other")
    good = meas(moid, 1, value=20.5)

    def bad(**kw):
        m = meas(moid, 2)
        for k, v in kw.items():
            if v is None:
                m.pop(k)
            else:
                m[k] = v
        return m

    # media type
    for ctype in (None, "application/json", "text/plain", CT_MEASUREMENT + "x"):
        r, data = call(c, "POST", "/measurement/measurements", {"measurements": [good]}, tok,
                       ctype)
        assert r.status == 415, ctype
        assert json.loads(data)["error"] == "general/unsupportedMediaType"
    # invalid items -> 422, and nothing of the batch is stored
    invalid = [
        bad(time=None), bad(time="2024-05-01 10:00:00"), bad(time="2024-05-01T10:00:00"),
        bad(time="2024-13-01T10:00:00Z"), bad(time=1714550400), bad(type=None), bad(type=""),
        bad(type=5), bad(source=None), bad(source={"id": None}), bad(source={"id": True}),
        bad(source={}), bad(c8y_Temperature={"T": {"unit": "C"}}),
        bad(c8y_Temperature={"T": {"value": "20"}}), bad(c8y_Temperature={"T": {"value": True}}),
        bad(c8y_Temperature={"T": 20}), bad(c8y_Temperature={"T": {"value": 1, "unit": 5}}),
        bad(c8y_Temperature={"T": {"value": 2 ** 63}}), bad(c8y_Temperature={}),
        bad(c8y_Temperature=None), "not an object",
    ]
    for item in invalid:
        r, data = post_coll(c, tok, [good, item])
        assert r.status == 422, (item, data)
        err = json.loads(data)
        assert err["error"] == "undefined/validationError" and "measurement 1" in err["message"]
    for raw in (b"{not json", b'{"measurements": [' + json.dumps(good).encode() + b"]",
                b'{"measurements": "x"}', b"[]",
                json.dumps({"measurements": [good]}).replace("20.5", "NaN").encode(),
                json.dumps({"measurements": [good]}).replace("20.5", "1e999").encode(),
                b"\xff\xfe"):
        r, data = call(c, "POST", "/measurement/measurements", raw, tok,
                       CT_MEASUREMENT_COLLECTION)
        assert r.status == 422, raw
    # another device's managed object -> 403, whole batch refused
    r, data = post_coll(c, tok, [good, meas(other, 3)])
    assert r.status == 403 and json.loads(data)["error"] == "security/Forbidden"
    r, data = call(c, "POST", "/measurement/measurements", meas(other), tok, CT_MEASUREMENT)
    assert r.status == 403
    assert emu.total == 0 and emu.measurements() == []
    # one connection for all of it: every error answer kept the connection in sync
    assert emu.connections == 1
    r, _ = post_coll(c, tok, [good])
    assert r.status == 201 and emu.total == 1


def test_fault_injection(emu):
    c = client(emu)
    tok = emu.mint(GW)
    moid = emu.register(GW)
    emu.fail_next(1, 429, retry_after=2)
    emu.fail_next(1, 500)
    emu.fail_next(1, 400, body={"error": "custom/thing", "message": "m"})
    emu.fail_next(1, 401)
    r, data = post_coll(c, tok, [meas(moid, 1)])
    assert r.status == 429 and r.getheader("Retry-After") == "2"
    assert json.loads(data)["error"] == "general/tooManyRequests"
    r, data = post_coll(c, tok, [meas(moid, 1)])
    assert r.status == 500 and r.getheader("Retry-After") is None
    r, data = post_coll(c, tok, [meas(moid, 1)])
    assert r.status == 400 and json.loads(data) == {"error": "custom/thing", "message": "m"}
    r, data = post_coll(c, tok, [meas(moid, 1)])
    assert r.status == 401 and r.getheader("WWW-Authenticate")
    r, data = post_coll(c, tok, [meas(moid, 1)])
    assert r.status == 201
    assert emu.total == 1 and sum(emu.counts().values()) == 1
    assert [rq.status for rq in emu.requests] == [429, 500, 400, 401, 201]
    # faults apply to measurement POSTs only
    emu.fail_next(1, 503)
    r, _ = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
    assert r.status == 200
    emu.clear_faults()
    # unavailable service
    emu.set_available(False)
    r, data = post_coll(c, tok, [meas(moid, 2)])
    assert r.status == 503
    emu.set_available(True)
    # slow server
    emu.set_delay(0.3)
    t0 = time.monotonic()
    r, _ = post_coll(c, tok, [meas(moid, 2)])
    assert r.status == 201 and time.monotonic() - t0 >= 0.3
    emu.set_delay(0)
    assert emu.connections == 1


def test_keep_alive_reuse_and_drop(emu):
    c = client(emu)
    tok = emu.mint(GW)
    moid = emu.register(GW)
    for i in range(3):
        r, _ = post_coll(c, tok, [meas(moid, i)])
        assert r.status == 201 and not r.will_close
    assert emu.connections == 1
    assert len({rq.conn_id for rq in emu.requests}) == 1
    # the server drops it (like a load balancer): the next request needs a new one
    assert emu.drop_connections() == 1
    time.sleep(0.1)
    with pytest.raises((ConnectionError, http.client.HTTPException, ssl.SSLError, OSError)):
        post_coll(c, tok, [meas(moid, 9)])
    c.close()
    r, _ = post_coll(c, tok, [meas(moid, 9)])  # http.client reconnects
    assert r.status == 201 and emu.connections == 2
    # restart on the same port
    port = emu.port
    emu.restart()
    assert emu.port == port
    c2 = client(emu)
    r, _ = post_coll(c2, tok, [meas(moid, 10)])
    assert r.status == 201 and emu.total == 5


def test_size_cap_unknown_paths_and_methods(tmp_path, pki):
    with C8yRest(tmp_path / "c8y", pki, secret=SECRET, max_body=1000) as e:
        c = client(e)
        tok = e.mint(GW)
        moid = e.register(GW)
        r, data = post_coll(c, tok, [meas(moid, i) for i in range(20)])
        assert r.status == 413 and r.will_close
        assert json.loads(data)["error"] == "general/requestEntityTooLarge"
        c.close()
        r, data = call(c, "GET", "/inventory/managedObjects/1", token=tok)
        assert r.status == 404 and json.loads(data)["error"] == "general/notFound"
        r, data = call(c, "GET", "/measurement/measurements", token=tok)
        assert r.status == 405 and r.getheader("Allow") == "POST"
        r, data = call(c, "DELETE", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
        assert r.status == 405
        # chunked request body (what libcurl sends when it does not know the size)
        body = json.dumps({"measurements": [meas(moid, 1)]}).encode()
        c.putrequest("POST", "/measurement/measurements")
        c.putheader("Authorization", f"Bearer {tok}")
        c.putheader("Content-Type", CT_MEASUREMENT_COLLECTION)
        c.putheader("Transfer-Encoding", "chunked")
        c.endheaders()
        for part in (body[:10], body[10:]):
            c.send(b"%x\r\n%s\r\n" % (len(part), part))
        c.send(b"0\r\n\r\n")
        r = c.getresponse()
        r.read()
        assert r.status == 201 and e.total == 1


# -- mTLS token endpoint -------------------------------------------------------

def test_mtls_device_access_token(emu, pki, tmp_path):
    cert = write_client_cert(pki, tmp_path, GW)
    m = client(emu, emu.mtls_port, cert=cert)
    r, data = call(m, "POST", "/devicecontrol/deviceAccessToken")
    assert r.status == 200, data
    tok = json.loads(data)["accessToken"]
    p = verify_jwt(tok, SECRET, tenant="t100")
    assert p["sub"] == f"device_{GW}" and p["exp"] - p["iat"] == 3600
    assert emu.issued_tokens == [(GW, p["jti"])]
    # the token works on the main listener
    c = client(emu)
    r, data = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
    assert r.status == 200 and p["jti"] in emu.tokens_seen
    # configurable lifetime
    emu.set_token_lifetime(300)
    r, data = call(m, "POST", "/devicecontrol/deviceAccessToken")
    p2 = verify_jwt(json.loads(data)["accessToken"], SECRET)
    assert p2["exp"] - p2["iat"] == 300
    r, _ = call(m, "GET", "/devicecontrol/deviceAccessToken")
    assert r.status == 405
    r, _ = call(m, "POST", "/measurement/measurements")
    assert r.status == 404
    # no client certificate: the handshake does not complete
    before = len(emu.handshake_failures)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        call(client(emu, emu.mtls_port), "POST", "/devicecontrol/deviceAccessToken")
    # a certificate from another hierarchy: refused too
    from harness import Pki
    alien = write_client_cert(Pki(tmp_path / "alien", name="alien"), tmp_path / "a", GW)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        call(client(emu, emu.mtls_port, cert=alien), "POST", "/devicecontrol/deviceAccessToken")
    time.sleep(0.2)
    fails = emu.handshake_failures[before:]
    assert len(fails) == 2 and all(kind == "mtls" for _, kind, _ in fails)
    assert len(emu.issued_tokens) == 2
    assert emu.mtls_connections == 3


# -- libcurl interop (the daemon's client) -------------------------------------

def curl(*args, check=True):
    p = subprocess.run(["curl", "-sS", *map(str, args)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    if check:
        assert p.returncode == 0, p.stderr.decode()
    return p


def test_curl_keepalive_expect_continue_and_mtls(emu, pki, tmp_path):
    tok = emu.mint(GW)
    moid = emu.register(GW)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"measurements": [meas(moid, i) for i in range(3)]}))
    big = tmp_path / "big.json"  # > 1 MiB: curl sends Expect: 100-continue
    big.write_text(json.dumps({"measurements": [meas(moid, i) for i in range(100, 8100)]}))
    assert big.stat().st_size > 1024 * 1024
    common = ["--cacert", emu.ca_file, "-H", f"Authorization: Bearer {tok}",
              "-o", "/dev/null", "-w", "%{http_code}\\n"]
    url = f"{emu.url}/measurement/measurements"
    p = curl(*common, f"{emu.url}/identity/externalIds/c8y_Serial/{GW}",
             "--next", *common, "-H", f"Content-Type: {CT_MEASUREMENT_COLLECTION}",
             "--data-binary", f"@{small}", url,
             "--next", *common, "-H", f"Content-Type: {CT_MEASUREMENT_COLLECTION}",
             "--data-binary", f"@{big}", url)
    assert p.stdout.decode().split() == ["200", "201", "201"]
    assert emu.connections == 1, "curl reuses one keep-alive connection"
    assert emu.total == 8003 and set(emu.counts().values()) == {1}
    # mTLS with curl's client certificate
    chain, key = write_client_cert(pki, tmp_path, GW)
    p = curl("--cacert", emu.ca_file, "--cert", chain, "--key", key, "-X", "POST",
             "-H", "Accept: application/json", f"{emu.mtls_url}/devicecontrol/deviceAccessToken")
    assert verify_jwt(json.loads(p.stdout)["accessToken"], SECRET)["sub"] == f"device_{GW}"
    p = curl("--cacert", emu.ca_file, "-X", "POST",
             f"{emu.mtls_url}/devicecontrol/deviceAccessToken", check=False)
    assert p.returncode != 0


# -- throughput --------------------------------------------------------------

@pytest.mark.parametrize("record", ["full", "counter", "none"])
def test_self_load_keepalive(tmp_path, pki, record):
    """200 batches of 500 over one keep-alive connection, each measurement
    counted exactly once.  The rate is printed for the record, never
    asserted: a timed test on shared cores fails for the neighbours' load
    (bench/bulk_drain.py is where the emulator's speed matters)."""
    with C8yRest(tmp_path / "c8y", pki, secret=SECRET, record=record, mtls_port=False) as e:
        tok = e.mint(GW)
        moid = e.register(GW)
        base = "2024-05-01T10:00:00.000Z"
        bodies = []
        for b in range(200):
            items = [{"source": {"id": moid}, "time": base, "type": "c8y_Counter",
                      "c8y_Counter": {f"s{i % 4}": {"value": b * 500 + i, "unit": "n"}}}
                     for i in range(500)]
            bodies.append(json.dumps({"measurements": items}, separators=(",", ":")).encode())
        hdrs = {"Authorization": f"Bearer {tok}", "Content-Type": CT_MEASUREMENT_COLLECTION}
        c = client(e)
        t0 = time.perf_counter()
        for body in bodies:
            c.request("POST", "/measurement/measurements", body, headers=hdrs)
            r = c.getresponse()
            r.read()
            assert r.status == 201
        elapsed = time.perf_counter() - t0
        assert e.total == 100_000 and e.connections == 1
        t1 = time.perf_counter()
        if record == "none":
            with pytest.raises(RuntimeError):
                e.counts()
            assert e.total_for(GW) == 100_000
        else:
            counts = e.counts()
            assert len(counts) == 100_000 and set(counts.values()) == {1}
        count_s = time.perf_counter() - t1
        rps = 200 / elapsed
        figure = (f"record={record}: 200 x 500 measurements in {elapsed:.2f}s = {rps:.0f} req/s, "
                  f"{100_000 / elapsed:,.0f} measurements/s "
                  f"({sum(map(len, bodies)) / elapsed / 1e6:.1f} MB/s); counts() {count_s:.2f}s "
                  "(client in the same process)")
        print(figure)
        (tmp_path.parent / f"selfload-{record}.txt").write_text(figure + "\n")


# -- delay proxy ---------------------------------------------------------------

class EchoServer:
    """Plain TCP echo (or sink with sha256 when sink=True) on a free port."""

    def __init__(self, sink=False):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.sink = sink
        self.digests = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        h, n = hashlib.sha256(), 0
        with conn:
            while True:
                try:
                    data = conn.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    break
                if self.sink:
                    h.update(data)
                    n += len(data)
                else:
                    conn.sendall(data)
            if self.sink:
                self.digests.append((n, h.hexdigest()))
                conn.sendall(f"{n} {h.hexdigest()}".encode())
            conn.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()


def rtt(port, n=12):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            s.sendall(b"x")
            assert s.recv(16) == b"x"
            times.append(time.perf_counter() - t0)
    return statistics.median(times[2:])


def test_proxy_rtt_and_runtime_delay():
    echo = EchoServer()
    try:
        base = rtt(echo.port)
        with DelayProxy("127.0.0.1", echo.port, delay_ms=25) as p:
            got = rtt(p.port)
            assert 0.050 <= got < 0.050 + base + 0.030, f"RTT {got * 1000:.1f} ms at 25 ms each way"
            p.set_delay(5)
            got = rtt(p.port)
            assert 0.010 <= got < 0.035, f"RTT {got * 1000:.1f} ms at 5 ms each way"
            assert p.connections == 2
    finally:
        echo.close()


def test_proxy_bulk_is_pipelined_and_half_close():
    sink = EchoServer(sink=True)
    data = os.urandom(1 << 20) * 20  # 20 MiB
    try:
        with DelayProxy("127.0.0.1", sink.port, delay_ms=25) as p:
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", p.port)) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # half-close travels through the proxy
                reply = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            elapsed = time.perf_counter() - t0
        n, digest = reply.decode().split()
        assert int(n) == len(data) and digest == hashlib.sha256(data).hexdigest()
        # stop-and-wait with 256 KiB chunks sleeps at least 80 x 50 ms = 4 s
        # whatever the machine's load: below that, chunks overlapped
        assert elapsed < 4.0, f"20 MiB took {elapsed:.2f}s through a 25 ms proxy"
        assert elapsed >= 0.050  # request and answer each waited once
        print(f"20 MiB through the 25 ms proxy in {elapsed:.2f}s "
              f"({len(data) / elapsed / 1e6:.0f} MB/s)")
    finally:
        sink.close()


def test_proxy_many_connections_and_tls_passthrough(emu, tmp_path):
    echo = EchoServer()
    try:
        with DelayProxy("127.0.0.1", echo.port, delay_ms=10) as p:
            errors = []

            def one(i):
                try:
                    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
                        msg = f"hello {i}".encode() * 100
                        s.sendall(msg)
                        s.shutdown(socket.SHUT_WR)
                        got = b""
                        while True:
                            d = s.recv(65536)
                            if not d:
                                break
                            got += d
                        assert got == msg
                except Exception as e:  # pragma: no cover
                    errors.append(e)
            ts = [threading.Thread(target=one, args=(i,)) for i in range(40)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(20)
            assert not errors and p.connections == 40
    finally:
        echo.close()
    # HTTPS through the proxy: TLS unchanged, 2 x delay per round trip
    tok = emu.mint(GW)
    with DelayProxy("127.0.0.1", emu.port, delay_ms=20) as p:
        c = client(emu, p.port)
        call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
        t0 = time.perf_counter()
        r, _ = call(c, "GET", f"/identity/externalIds/c8y_Serial/{GW}", token=tok)
        assert r.status == 200 and time.perf_counter() - t0 >= 0.040
        assert emu.connections == 1
    # a target that refuses: the client's connection is closed
    with DelayProxy("127.0.0.1", free_port(), delay_ms=1) as p:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            assert s.recv(10) == b""
        time.sleep(0.05)
        assert p.failed_connects == 1


def test_proxy_script():
    echo = EchoServer()
    port = free_port()
    proc = subprocess.Popen([PY, str(REPO_ROOT / "tests/harness/delayproxy.py"),
                             "--listen", str(port), "--target", f"127.0.0.1:{echo.port}",
                             "--delay-ms", "15"], stdout=subprocess.PIPE)
    try:
        assert b"delayproxy" in proc.stdout.readline()
        got = rtt(port, n=6)
        assert 0.030 <= got < 0.080
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()
        echo.close()
