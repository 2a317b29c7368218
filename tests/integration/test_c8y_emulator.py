"""The Cumulocity MQTT emulator itself (tests/cloud/c8y_plugin.c through
harness.C8yCloud), driven by plain paho clients: every rule it enforces must
actually bite, or tests of the daemon against it prove nothing.

Needs build/tests/c8y_plugin.so (`make build/tests/c8y_plugin.so`).
"""

from __future__ import annotations

import base64
import csv
import json
import ssl
import subprocess
import threading
import time
from typing import List, Optional, Tuple

import pytest

from harness import C8yCloud, HarnessError, Observer, decode_jwt, wait_until

# mosquitto's CONNACK "not authorized" (MQTT 3.1.1)
NOT_AUTHORIZED = 5


@pytest.fixture
def cloud(tmp_path, pki):
    c = C8yCloud(tmp_path / "c8y", pki, jwt_lifetime=4).start()
    yield c
    c.stop()


class Device:
    """A paho client with a client certificate (CN `cn`), collecting what it
    receives. connect() returns the CONNACK code; no reconnects."""

    def __init__(self, cloud: C8yCloud, cn: str, client_id: Optional[str] = None):
        import paho.mqtt.client as mqtt

        self.cloud = cloud
        self.cn = cn
        self.client_id = client_id if client_id is not None else cn
        cert = cloud.pki.client_cert(cn)
        d = cloud.dir / f"dev-{self.client_id.replace(':', '_')}-{id(self)}"
        chain = cert.write_chain(d / "chain.pem", "leaf+intermediate")
        key = cert.write_key(d / "key.pem")
        self.c = mqtt.Client(client_id=self.client_id, clean_session=True,
                             protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=str(cloud.broker.server_ca_file), certfile=str(chain),
                       keyfile=str(key), cert_reqs=ssl.CERT_REQUIRED,
                       tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.msgs: List[Tuple[str, str]] = []
        self.granted: List[int] = []
        self._connack = threading.Event()
        self._suback = threading.Event()
        self.rc: Optional[int] = None
        self.c.on_connect = self._on_connect
        # no automatic reconnects: a refused or kicked client stays down
        self.disconnected = threading.Event()
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = lambda cl, u, m: self.msgs.append(
            (m.topic, m.payload.decode(errors="replace")))
        self.c.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, rc):
        self.rc = rc
        if rc != 0:
            client.loop_stop()
        self._connack.set()

    def _on_disconnect(self, client, userdata, rc):
        self.disconnected.set()
        client.loop_stop()

    def _on_subscribe(self, client, userdata, mid, granted):
        self.granted = list(granted)
        self._suback.set()

    def connect(self, timeout: float = 5) -> int:
        self.c.connect(self.cloud.broker.host, self.cloud.broker.port, keepalive=30)
        self.c.loop_start()
        if not self._connack.wait(timeout):
            raise HarnessError(f"no CONNACK for {self.client_id}")
        if self.rc != 0:
            self.close()
        return self.rc

    def subscribe(self, *topics: str, qos: int = 1) -> List[int]:
        self._suback.clear()
        self.c.subscribe([(t, qos) for t in topics])
        assert self._suback.wait(5), "no SUBACK"
        return self.granted

    def publish(self, topic: str, payload: str | bytes = "", qos: int = 1) -> None:
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        assert info.is_published(), f"{self.client_id}: no PUBACK for {topic}"

    def got(self, topic: str) -> List[str]:
        return [p for t, p in self.msgs if t == topic]

    def wait_for(self, topic: str, n: int = 1, timeout: float = 5) -> List[str]:
        return wait_until(lambda: len(self.got(topic)) >= n and self.got(topic), timeout,
                          what=f"{n} message(s) on {topic} for {self.client_id} "
                               f"(have {self.msgs})")

    def close(self) -> None:
        try:
            self.c.disconnect()
        finally:
            self.c.loop_stop()


def device(cloud, cn, client_id=None, topics=("s/ds", "s/dat", "s/e")) -> Device:
    d = Device(cloud, cn, client_id)
    assert d.connect() == 0, f"{d.client_id} refused: {cloud.records('refused')}"
    if topics:
        assert d.subscribe(*topics) == [1] * len(topics)
    return d


QUIET = 0.4  # how long "nothing arrives" is watched for


# -- identity ----------------------------------------------------------------

def test_client_id_must_match_certificate_cn(cloud):
    wrong = Device(cloud, "gw-a", "gw-b")
    assert wrong.connect() == NOT_AUTHORIZED
    for cid in ("d:gw-b", "d:gw-b:tmpl", "x:gw-a", "d:gw-a:", "d:gw-a:x:y", "gw-a "):
        assert Device(cloud, "gw-a", cid).connect() == NOT_AUTHORIZED, cid
    refused = cloud.records("refused")
    assert [r["client"] for r in refused] == ["gw-b", "d:gw-b", "d:gw-b:tmpl", "x:gw-a",
                                              "d:gw-a:", "d:gw-a:x:y", "gw-a "]
    assert all(r["cn"] == "gw-a" for r in refused)

    plain = device(cloud, "gw-a", "gw-a", topics=())
    plain.close()
    d = device(cloud, "gw-a", "d:gw-a:myTemplates", topics=())
    conns = [r for r in cloud.records("connect") if r["device"] == "gw-a"]
    assert [(r["client"], r["xid"]) for r in conns] == [("gw-a", None),
                                                        ("d:gw-a:myTemplates", "myTemplates")]
    # the broker log still names client id and CN (Broker.clients())
    assert ("d:gw-a:myTemplates", "gw-a") in [(c.client_id, c.username)
                                               for c in cloud.broker.clients()]
    # an admin CN may use any client id
    admin = device(cloud, "observer", "anything-goes", topics=())
    admin.close()
    d.close()


def test_one_connection_per_device(cloud):
    first = device(cloud, "gw-a", "gw-a")
    second = device(cloud, "gw-a", "d:gw-a")
    assert first.disconnected.wait(5), "the first connection was not dropped"
    assert not second.disconnected.is_set()
    assert [r["client"] for r in cloud.records("disconnect", "gw-a")] == ["gw-a"]
    second.close()


def test_reject_connect_control(cloud):
    cloud.control(reject_connect=True)
    assert Device(cloud, "gw-a").connect() == NOT_AUTHORIZED
    assert cloud.records("refused")[-1]["reason"] == "reject_connect"
    cloud.control(reject_connect=False)
    device(cloud, "gw-a", topics=()).close()


# -- JWT ---------------------------------------------------------------------

def test_uat_answered_only_to_requester(cloud):
    a = device(cloud, "gw-a")
    b = device(cloud, "gw-b")
    b.publish("s/us", "500")  # b is active too: still gets nothing
    a.publish("s/uat")
    (answer,) = a.wait_for("s/dat")
    time.sleep(QUIET)
    assert b.got("s/dat") == [] and a.got("s/dat") == [answer]
    code, token = answer.split(",", 1)
    assert code == "71"
    rec = cloud.wait_token("gw-a")
    assert rec["token"] == token and rec["new"] and rec["delivered"]
    assert cloud.tokens("gw-b") == []
    a.close()
    b.close()


def test_token_signature_claims_and_renewal_after_half_life(cloud):
    a = device(cloud, "gw-a")
    a.publish("s/uat")
    first = a.wait_for("s/dat")[0].split(",", 1)[1]
    claims = decode_jwt(first, cloud.secret)  # verifies HS256 with the secret
    assert claims["sub"] == "device_gw-a" and claims["ten"] == "t100"
    assert claims["iss"] == "t100.c8y.test" and claims["aud"] == "c8y.test"
    assert claims["exp"] - claims["iat"] == 4 and claims["nbf"] == claims["iat"]
    assert claims["tfa"] is False and claims["jti"] == cloud.tokens("gw-a")[0]["jti"]
    with pytest.raises(HarnessError, match="signature"):
        decode_jwt(first, b"not the secret")
    header = json.loads(base64.urlsafe_b64decode(first.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}

    a.publish("s/uat")  # before half the lifetime: the same token
    assert a.wait_for("s/dat", 2)[1] == f"71,{first}"
    assert cloud.wait_token("gw-a", 2)["new"] is False

    issued = cloud.tokens("gw-a")[0]["t"]
    time.sleep(max(0.0, issued + 2.2 - time.time()))  # past half of 4 s
    a.publish("s/uat")
    third = a.wait_for("s/dat", 3)[2].split(",", 1)[1]
    assert third != first and cloud.wait_token("gw-a", 3)["new"] is True
    assert decode_jwt(third, cloud.secret)["jti"] != claims["jti"]
    a.close()


def test_uat_ignore_and_answer(cloud):
    a = device(cloud, "gw-a")
    cloud.control(uat="ignore")
    a.publish("s/uat")
    wait_until(lambda: cloud.records("uat", "gw-a"), 5, what="uat record")
    time.sleep(QUIET)
    assert a.got("s/dat") == [] and cloud.tokens("gw-a") == []
    assert cloud.records("uat", "gw-a")[0]["answered"] is False
    cloud.control(uat="answer")
    a.publish("s/uat")
    assert a.wait_for("s/dat")[0].startswith("71,")
    a.close()


def test_nothing_on_s_dat_for_a_client_not_subscribed(cloud):
    a = device(cloud, "gw-a", topics=("s/ds",))
    a.publish("s/uat")
    rec = cloud.wait_token("gw-a")
    time.sleep(QUIET)
    assert rec["delivered"] is False and a.msgs == []
    a.close()


def test_injected_token_answer(cloud):
    a = device(cloud, "gw-a")
    a.publish("s/uat")
    a.wait_for("s/dat")
    cloud.send_dat("gw-a", "71,not-a-jwt")
    assert a.wait_for("s/dat", 2)[1] == "71,not-a-jwt"
    a.close()


# -- SmartREST ---------------------------------------------------------------

def test_bad_smartrest_lines_get_s_e_errors_for_that_client_only(cloud):
    obs = Observer(cloud.broker).start()
    a = device(cloud, "gw-a")
    b = device(cloud, "gw-b")
    good = [
        "100,Test gateway,c8y_EdgeBridge",
        "110,SN-1,Pi 4,1.2",
        "114,c8y_Restart,c8y_Command",
        "117,10",
        "200,c8y_Temperature,T,21.5,C,2026-01-02T03:04:05.123+01:00",
        "200,c8y_Temperature,T,-1.5e3",
        "201,c8y_Multi,,c8y_Temperature,T,21.5,C,c8y_Pressure,P,1.2",
        "301,edgebridge_Critical",
        '302,edgebridge_CertificateExpiring,"expires in 3 days, on 2026-02-01"',
        "400,c8y_Event,\"a \"\"quoted\"\" text\"",
        "500",
        "501,c8y_Restart",
        "502,c8y_Restart,\"could not, sorry\"",
        "503,c8y_Command,done",
        "100,,",  # trailing empty values are not values
    ]
    bad = {  # line: (code, template id, message) of the s/e error line
        "200,c8y_Temperature,T,abc": (41, "200", "Value is not a NUMBER: abc"),
        "200,c8y_Temperature,T": (41, "200", "Missing mandatory value: value"),
        "200,c8y_Temperature,T,1,C,yesterday": (41, "200", "Value is not a DATE: yesterday"),
        "200,c8y_Temperature,T,1,C,2026-01-02T03:04:05": (
            41, "200", "Value is not a DATE: 2026-01-02T03:04:05"),  # no zone
        "200,c8y_Temperature,T,1,C,2026-02-29T03:04:05Z": (
            41, "200", "Value is not a DATE: 2026-02-29T03:04:05Z"),
        "400,c8y_Event": (41, "400", "Missing mandatory value: text"),
        "400,c8y_Event,text,2026-01-02T03:04:05Z,extra": (
            41, "400", "Wrong number of arguments: 4 (at most 3)"),
        '400,c8y_Event,"text, with comma",x': (41, "400", "Value is not a DATE: x"),
        "117,ten": (41, "117", "Value is not an INTEGER: ten"),
        "305,c8y_A,SEVERE": (41, "305", "Value is not a SEVERITY: SEVERE"),
        "201,c8y_Multi,,c8y_T,T": (41, "201", "Missing mandatory value: value"),
        "501": (41, "501", "Missing mandatory value: fragment"),
        "999,what": (40, "999", "No static template for this message id"),
        # quotes: "" is the escape, a backslash is not
        '400,c8y_Event,"say \\"hi\\" now"': (
            42, "400", "Malformed request line: text after a closing quote"),
        '400,c8y_Event,say "hi"': (42, "400", "Malformed request line: quote in an "
                                              "unquoted value"),
    }
    payload = "\r\n".join(good + list(bad)) + "\n"
    a.publish("s/us", payload)
    errors = a.wait_for("s/e", len(bad))
    time.sleep(QUIET)
    assert b.got("s/e") == [] and b.msgs == []
    # the error lines are CSV themselves (quoted where needed, "" for a quote)
    assert [tuple(next(csv.reader([e]))) for e in errors] == \
        [(str(c), t, m) for c, t, m in bad.values()]
    rej = cloud.rejections("gw-a")
    assert [r["line"] for r in rej] == list(bad)
    assert [r["error"] for r in rej] == errors and all(r["delivered"] for r in rej)
    assert [r["code"] for r in rej] == [c for c, _, _ in bad.values()]
    assert cloud.lines("gw-a") == good
    quoted = [r for r in cloud.records("line", "gw-a") if r["line"].startswith("400,")][0]
    assert quoted["fields"] == ["400", "c8y_Event", 'a "quoted" text']
    assert cloud.lines("gw-a", "50") == good[10:14]
    assert cloud.wait_lines("gw-a", lambda l: l.startswith("117,")) == ["117,10"]
    # the observer (admin) sees the device's publish as sent; devices never do
    obs.wait_lines(lambda l: l.text == "100,,", 1, timeout=5)
    obs.stop()
    a.close()
    b.close()


def test_quoted_line_break_and_unterminated_quote(cloud):
    a = device(cloud, "gw-a")
    a.publish("s/us", '400,c8y_Event,"two\nlines"\n400,c8y_Event,"open')
    (err,) = a.wait_for("s/e")
    assert err == "42,400,Malformed request line: unterminated quoted value"
    (rec,) = cloud.records("line", "gw-a")
    assert rec["fields"] == ["400", "c8y_Event", "two\nlines"]
    a.close()


def test_oversize_payload_rejected_counting_the_packet_header(cloud):
    obs = Observer(cloud.broker).start()
    a = device(cloud, "gw-a")
    # PUBLISH s/us at QoS 1: 1 + 2 (remaining length) + 2 + 4 (topic) + 2
    # (packet id) = 11 bytes around the payload; 16184 in all is the limit
    fits = "400,c8y_Event," + "x" * (16184 - 11 - len("400,c8y_Event,"))
    a.publish("s/us", fits)
    a.publish("s/us", fits + "y")
    assert a.wait_for("s/e") == ["41,,Message too large: 16185 bytes (at most 16184)"]
    (big,) = cloud.records("payload_too_large", "gw-a")
    assert big["size"] == 16185 and big["payload_len"] == 16174 and big["delivered"]
    assert cloud.lines("gw-a") == [fits]
    obs.wait_lines(lambda l: l.text == fits, 1, timeout=5)
    time.sleep(QUIET)
    assert [l.text for l in obs.lines] == [fits]  # the big one was not routed
    obs.stop()
    a.close()


# -- ACL ---------------------------------------------------------------------

def test_acl_denies_other_topics(cloud):
    obs = Observer(cloud.broker, topics=("#",)).start()
    a = device(cloud, "gw-a", topics=())
    b = device(cloud, "gw-b", topics=())
    assert a.subscribe("s/us", "s/ds", "#", "s/dc/+", "s/dc/myXid", "t/us") == \
        [128, 1, 128, 128, 1, 128]
    for topic in ("s/ds", "s/dat", "s/e", "other/topic", "s/us/child", "c8y/gw-b/s/ds",
                  "c8y/control"):
        a.publish(topic, "500")
    b.c.publish("s/us", "500", qos=1, retain=True).wait_for_publish(5)
    b.publish("s/uc/myXid", "999,custom")
    b.publish("s/ut/myXid", "10,999,POST,MEASUREMENT,,c8y_M,,c8y_M.M.value,NUMBER,")
    wait_until(lambda: len(cloud.lines("gw-b")) == 3, 5, what="b's lines")
    time.sleep(QUIET)
    assert a.msgs == []  # never b's s/us, whatever a subscribed to
    denied = [(r["access"], r["topic"]) for r in cloud.records("acl_denied", "gw-a")]
    assert denied == [("subscribe", "s/us"), ("subscribe", "#"), ("subscribe", "s/dc/+"),
                      ("subscribe", "t/us"), ("write", "s/ds"), ("write", "s/dat"),
                      ("write", "s/e"), ("write", "other/topic"), ("write", "s/us/child"),
                      ("write", "c8y/gw-b/s/ds"), ("write", "c8y/control")]
    # nothing a denied to publish was routed (the observer sees everything else)
    assert {l.topic for l in obs.lines} == {"s/uc/myXid", "s/us", "s/ut/myXid"}
    assert cloud.records("inject") == [] and cloud.records("control") == []
    # a retained flag has no effect: nothing is kept for later subscribers
    late = Observer(cloud.broker, cert=cloud.pki.client_cert("observer"),
                    client_id="late-observer").start()
    time.sleep(QUIET)
    assert late.lines == []
    late.stop()
    obs.stop()
    a.close()
    b.close()


def test_admins_cannot_publish_to_downstream_topics_directly(cloud):
    a = device(cloud, "gw-a")
    a.publish("s/us", "500")
    admin = device(cloud, "c8yadmin", "raw-admin", topics=())
    admin.publish("s/ds", "510,gw-a")
    admin.publish("s/dc/x", "1,2")
    time.sleep(QUIET)
    assert a.msgs == []
    assert [r["topic"] for r in cloud.records("acl_denied")] == ["s/ds", "s/dc/x"]
    admin.close()
    a.close()


# -- injected downstream messages ---------------------------------------------

def test_injected_operation_reaches_only_that_device(cloud):
    a = device(cloud, "gw-a")
    b = device(cloud, "gw-b")
    for d in (a, b):
        d.publish("s/us", "500")
    cloud.send_operation("gw-a", "510,gw-a")
    cloud.send_error("gw-a", "50,,injected")
    assert a.wait_for("s/ds") == ["510,gw-a"]
    assert a.wait_for("s/e") == ["50,,injected"]
    time.sleep(QUIET)
    assert b.msgs == []
    assert [r["payload"] for r in cloud.records("delivered", "gw-a")] == ["510,gw-a",
                                                                          "50,,injected"]
    a.close()
    b.close()


def test_injected_operation_waits_for_upstream_publish_and_subscription(cloud):
    cloud.send_operation("gw-c", "511,gw-c,\"uptime\"")  # not even connected yet
    c = device(cloud, "gw-c", topics=("s/e",))
    time.sleep(QUIET)
    assert c.msgs == []  # connected, but has published nothing
    c.publish("s/us", "500")
    time.sleep(QUIET)
    assert c.msgs == []  # published, but not subscribed to s/ds
    c.subscribe("s/ds")
    assert c.wait_for("s/ds") == ['511,gw-c,"uptime"']
    c.close()
    # a new connection starts quiet again
    cloud.send_operation("gw-c", "510,gw-c")
    c2 = device(cloud, "gw-c", "d:gw-c")
    time.sleep(QUIET)
    assert c2.msgs == []
    c2.publish("s/uat")
    c2.wait_for("s/ds")
    assert c2.got("s/ds") == ["510,gw-c"] and len(c2.got("s/dat")) == 1
    c2.close()


def test_openssl_client_identity(cloud, tmp_path):
    """The rules hold for a non-paho client too: openssl s_client with a
    certificate whose CN differs from the client id gets CONNACK 5."""
    cert = cloud.pki.client_cert("gw-z")
    chain = cert.write_chain(tmp_path / "z.pem", "leaf+intermediate")
    key = cert.write_key(tmp_path / "z.key")

    def connack(client_id: str) -> bytes:
        cid = client_id.encode()
        var = b"\x00\x04MQTT\x04\x02\x00\x1e" + len(cid).to_bytes(2, "big") + cid
        connect = bytes([0x10, len(var)]) + var
        disconnect = b"\xe0\x00"  # so that the broker closes when accepted too
        p = subprocess.run(
            ["openssl", "s_client", "-quiet", "-ign_eof", "-connect",
             f"{cloud.broker.host}:{cloud.broker.port}", "-CAfile",
             str(cloud.broker.server_ca_file), "-cert", str(chain), "-cert_chain",
             str(chain), "-key", str(key),
             "-verify_return_error"],
            input=connect + disconnect, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            timeout=10)
        return p.stdout[:4]

    assert connack("gw-z") == b"\x20\x02\x00\x00"
    assert connack("d:gw-y") == b"\x20\x02\x00\x05"
