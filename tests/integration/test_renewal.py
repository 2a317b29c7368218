"""Certificate renewal end to end, against the Cumulocity MQTT emulator
(mosquitto with require_certificate + tests/cloud/c8y_plugin.c, which
records the serial number of the certificate each connection presented):

`edgebridge cert renew` makes a new key on the SoftHSM token and a CSR,
`cert install` puts the signed chain beside the pending renewal, and the
running daemon switches only after a test connection with the new pair
succeeds.  A chain the broker does not trust is refused: the daemon goes
straight back to the old certificate, raises an alarm and keeps sending."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from cryptography import x509

from harness import Pki, wait_until
from harness.tool import run_edgebridge

GW = "gw-0001"


def tool(env, *args, ok=True):
    r = run_edgebridge(["-c", env.config_file, *args], env=env.token.env)
    if ok:
        assert r.returncode == 0, f"{args}: {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def serials(env):
    """The serial numbers the connections presented, in order."""
    return [int(r["serial"], 16) for r in env.c8y.records("connect", device=GW)
            if r.get("serial")]


def serial_of(path) -> str:
    pem = path.read_bytes()
    cert = x509.load_pem_x509_certificate(pem[:pem.index(b"-----END CERTIFICATE-----") + 25])
    return cert.serial_number


def measurements_after(env, n0, n=2, timeout=20):
    wait_until(lambda: len(env.c8y.lines(GW, "200,")) >= n0 + n, timeout=timeout,
               what=f"{n} more measurements")


@pytest.fixture
def c8y_env(make_env):
    env = make_env(cloud="c8y")
    env.start_broker()
    env.write_config(sensor__boiler={"interval": "500ms"})
    return env


def start_renewal(env):
    csr_path = env.dir / "renew.csr"
    r = tool(env, "--json", "cert", "renew", "-o", csr_path)
    made = json.loads(r.stdout)
    assert made["key"].startswith("pkcs11:") and "pin" not in made["key"]
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == GW
    return made["key"], csr


def test_renewal_switches_after_a_successful_test_connection(c8y_env):
    env = c8y_env
    old_serial = serial_of(env.cert_file)
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    assert wait_until(lambda: serials(env) == [old_serial], timeout=10)

    key_uri, csr = start_renewal(env)
    # the new key is on the token, sensitive and never extractable
    keys = json.loads(tool(env, "key", "list", "--json").stdout)
    new = [k for k in keys if k["uri"] == key_uri]
    assert len(new) == 1 and new[0]["sensitive"] and not new[0]["extractable"]
    assert len(keys) == 2  # the old key is still there
    st = json.loads(tool(env, "--json", "cert", "renew", "--status").stdout)
    assert st == {"state": "waiting-for-certificate", "key": key_uri, "reason": None}
    # a second renewal while one is pending is refused
    r = tool(env, "cert", "renew", "-o", env.dir / "again.csr", ok=False)
    assert r.returncode == 1 and "pending" in r.stderr

    chain = env.pki.sign_csr(csr).write_chain(env.dir / "renewed.pem", "wrong-order")
    r = tool(env, "cert", "install", chain)
    assert "renewal" in r.stdout
    renewed_chain = env.state_dir / "renewal" / "chain.pem"
    new_serial = serial_of(renewed_chain)  # leaf first: install ordered it
    assert new_serial != old_serial

    n0 = len(env.c8y.lines(GW, "200,"))
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"notice: cert: switched to the renewed certificate", timeout=30)
    assert wait_until(lambda: serials(env)[-1:] == [new_serial], timeout=10)
    measurements_after(env, n0)
    # committed: a drop-in names the new key and chain; the renewal is gone
    dropin = (env.dir / "conf.d" / "95-renewal.conf").read_text()
    assert f"key = {key_uri}" in dropin
    assert json.loads(tool(env, "--json", "cert", "renew", "--status").stdout)["state"] == "none"
    # both alarms this could have raised are cleared, an event says so
    assert wait_until(lambda: "306,edgebridge_CertificateRenewalFailed" in
                      env.c8y.lines(GW, "306,"), timeout=10)
    assert any(l.startswith("400,edgebridge_CertificateRenewed,") for l in env.c8y.lines(GW, "400,"))
    assert env.pin not in d.output
    assert d.stop() == 0

    # a restart comes up on the new pair
    d2 = env.daemon()
    d2.wait_for_log(env.connected_re(), timeout=20)
    assert wait_until(lambda: serials(env)[-1:] == [new_serial], timeout=10)
    assert serials(env).count(old_serial) == 1
    # the tool now works with the new key too
    tool(env, "cert", "check")
    assert d2.stop() == 0


def test_refused_renewal_keeps_the_old_certificate_then_a_good_one_switches(c8y_env):
    env = c8y_env
    old_serial = serial_of(env.cert_file)
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    key_uri, csr = start_renewal(env)

    # signed by a CA the cloud was never told about
    rogue = Pki(env.dir / "rogue-pki", "rogue CA")
    tool(env, "cert", "install", rogue.sign_csr(csr).write_chain(env.dir / "rogue.pem", "full"))
    n0 = len(env.c8y.lines(GW, "200,"))
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"error: cert: the renewed certificate was not taken into use: the "
                   r"broker refused it: .*; still using the previous one", timeout=30, since=mark)
    # straight back on the old certificate, sending
    assert wait_until(lambda: serials(env)[-1:] == [old_serial], timeout=15)
    measurements_after(env, n0, n=3)
    assert wait_until(lambda: any(l.startswith("302,edgebridge_CertificateRenewalFailed,")
                                  for l in env.c8y.lines(GW, "302,")), timeout=10)
    st = json.loads(tool(env, "--json", "cert", "renew", "--status").stdout)
    assert st["state"] == "failed" and st["key"] == key_uri and st["reason"]
    assert not (env.dir / "conf.d" / "95-renewal.conf").exists()
    # the same chain is not retried on every reload...
    mark = d.mark()
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"reloaded", timeout=10, since=mark)
    assert "trying the renewed certificate" not in d.output[mark:]

    # ...but a newly installed chain is, at once
    tool(env, "cert", "install", env.pki.sign_csr(csr).write_chain(env.dir / "good.pem", "full"))
    assert json.loads(tool(env, "--json", "cert", "renew", "--status").stdout)["state"] == "installed"
    d.signal(signal.SIGHUP)
    d.wait_for_log(r"notice: cert: switched to the renewed certificate", timeout=30)
    installed = sorted((env.state_dir / "certs").iterdir())
    assert len(installed) == 1
    new_serial = serial_of(installed[0])
    assert wait_until(lambda: serials(env)[-1:] == [new_serial], timeout=10)
    assert wait_until(lambda: any(l == "306,edgebridge_CertificateRenewalFailed"
                                  for l in env.c8y.lines(GW, "306,")), timeout=10)
    assert d.stop() == 0


def p11_objects(env, kind):
    """pkcs11-tool's listing of the token's objects of one kind."""
    r = subprocess.run(["pkcs11-tool", "--module", env.token.module, "--list-objects",
                        "--type", kind], env={**os.environ, **env.token.env},
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_install_on_token_stores_the_leaf_beside_its_key(env):
    env.write_config()
    tool(env, "cert", "install", "--on-token", env.cert_file)
    certs = p11_objects(env, "cert")
    assert "Certificate Object" in certs and "label:      device" in certs, certs
    keys = p11_objects(env, "pubkey")
    ids = [l.split()[-1] for l in (certs + keys).splitlines()
           if l.strip().startswith("ID:")]
    assert len(ids) == 2 and ids[0] == ids[1], certs + keys
    # installing again replaces it, never piles up copies
    tool(env, "cert", "install", "--on-token", env.cert_file)
    assert p11_objects(env, "cert").count("Certificate Object") == 1
