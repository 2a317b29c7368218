"""`edgebridge cert csr / install / export` against a real SoftHSM2 token:
the CSR is signed by the token key, install orders and checks a chain before
replacing cloud.cert_file (keeping the previous one), export never carries a
private key."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness import wait_until

REPO = Path(__file__).resolve().parents[2]


def tool_binary() -> str:
    return os.environ.get("EDGEBRIDGE") or str(REPO / "build" / "edgebridge")


def run_tool(env, *args, pin_env=True):
    e = {**os.environ, **env.token.env}
    return subprocess.run([tool_binary(), "-c", str(env.config_file), *map(str, args)],
                          env=e, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def load_certs(pem: bytes):
    """All certificates of a PEM bundle (cryptography 38 has no helper)."""
    marker = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(part + marker)
            for part in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in part]


def spki(pem: bytes) -> bytes:
    key = serialization.load_pem_public_key(pem)
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def test_csr_is_signed_by_the_token_key(env):
    env.write_config()
    out = env.dir / "dev.csr"
    r = run_tool(env, "cert", "csr", "--subject", "/O=Acme/OU=Boilers", "-o", out)
    assert r.returncode == 0, r.stderr
    csr = x509.load_pem_x509_csr(out.read_bytes())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == env.gateway_id
    assert csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)[0].value == "Acme"
    pub = csr.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    assert pub == spki(env.token.public_key_pem())
    # openssl agrees
    v = subprocess.run(["openssl", "req", "-verify", "-noout", "-in", str(out)],
                       capture_output=True, text=True)
    assert v.returncode == 0, v.stderr
    assert env.pin not in r.stdout + r.stderr


def test_csr_refuses_bad_cn_and_warns_on_long_cn(env):
    env.write_config()
    r = run_tool(env, "cert", "csr", "--cn", "tenant:gw", "-o", env.dir / "x.csr")
    assert r.returncode == 2 and "contains ':'" in r.stderr
    assert not (env.dir / "x.csr").exists()
    r = run_tool(env, "cert", "csr", "--cn", "a-very-long-gateway-name-0001", "-o",
                 env.dir / "y.csr")
    assert r.returncode == 0 and "23" in r.stderr, r.stderr
    r = run_tool(env, "cert", "csr", "--key",
                 "pkcs11:token=edgebridge;object=device;pin-value=1234", "-o", env.dir / "z.csr")
    assert r.returncode == 2 and "PIN" in r.stderr


def test_csr_wrong_pin_exits_77_and_never_shows_it(env):
    bad = env.write_pin("bad-pin", "000000")
    env.write_config(hsm={"pin_file": bad})
    r = run_tool(env, "cert", "csr", "-o", env.dir / "x.csr")
    assert r.returncode == 77, r.stderr
    assert "PIN" in r.stderr and "000000" not in r.stdout + r.stderr


def test_install_orders_checks_and_keeps_the_previous_chain(env):
    env.write_config()
    installed = env.cert_file
    before = installed.read_bytes()
    out = env.dir / "new.csr"
    assert run_tool(env, "cert", "csr", "-o", out).returncode == 0
    issued = env.pki.sign_csr(out.read_bytes())
    wrong_order = env.dir / "from-ca.pem"
    issued.write_chain(wrong_order, "wrong-order")      # root, intermediate, leaf
    r = run_tool(env, "cert", "install", wrong_order)
    assert r.returncode == 0, r.stderr
    certs = load_certs(installed.read_bytes())
    assert [c.serial_number for c in certs] == \
        [issued.cert.serial_number] + [c.serial_number for c in issued.chain]
    assert Path(str(installed) + ".prev").read_bytes() == before
    # the daemon starts and connects with the installed chain
    env.start_broker()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=20)
    d.stop()


def test_install_refuses_a_chain_for_another_key_or_without_the_ca(env):
    env.write_config()
    installed = env.cert_file
    before = installed.read_bytes()
    other = env.pki.client_cert("gw-0001")             # right CN, other (file) key
    foreign = env.dir / "foreign.pem"
    other.write_chain(foreign, "full")
    r = run_tool(env, "cert", "install", foreign)
    assert r.returncode == 1 and "belongs to the token key" in r.stderr, r.stderr
    out = env.dir / "n.csr"
    assert run_tool(env, "cert", "csr", "-o", out).returncode == 0
    no_ca = env.dir / "no-ca.pem"
    env.pki.sign_csr(out.read_bytes()).write_chain(no_ca, "leaf+intermediate")
    r = run_tool(env, "cert", "install", no_ca)
    assert r.returncode == 1 and "self-signed" in r.stderr, r.stderr
    assert installed.read_bytes() == before
    assert not Path(str(installed) + ".new").exists()


def test_export_ca_and_p12_without_a_private_key(env):
    env.write_config()
    ca = env.dir / "ca.pem"
    p12 = env.dir / "device.p12"
    r = run_tool(env, "--json", "cert", "export", "--ca", ca, "--p12", p12)
    assert r.returncode == 0, r.stderr
    cas = load_certs(ca.read_bytes())
    assert len(cas) == 2 and cas[-1].issuer == cas[-1].subject      # intermediate, root
    dump = subprocess.run(["openssl", "pkcs12", "-in", str(p12), "-passin", "pass:",
                           "-nodes"], capture_output=True, text=True)
    assert dump.returncode == 0, dump.stderr
    assert dump.stdout.count("BEGIN CERTIFICATE") == 3
    assert "PRIVATE KEY" not in dump.stdout
