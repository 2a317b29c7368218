"""`edgebridge ca ...` and `edgebridge cert check`: a development CA made with
OpenSSL's C API signs a CSR whose key lives on a SoftHSM token; openssl(1)
verifies the result the way Cumulocity's guide does; `cert check` passes the
good chain and names the rule each broken variant breaks; the broker (with
require_certificate) accepts the daemon presenting the `ca sign --chain`
bundle."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import Pki
from harness.tool import run_edgebridge, tool_binary

RULES = ("key-match", "cn", "chain-order", "chain-ca", "validity", "x509-v3",
         "leaf-ca", "signer-ca", "pathlen", "key-strength")


@pytest.fixture(scope="module")
def edgebridge() -> Path:
    path = tool_binary()
    if not path.is_file():
        pytest.fail(f"edgebridge binary not found at {path}: run "
                    "`make build/edgebridge` (or set EDGEBRIDGE)", pytrace=False)
    return path


def tool(*args, env=None, ok=True):
    r = run_edgebridge(list(args), env=env)
    if ok:
        assert r.returncode == 0, f"edgebridge {args} -> {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def openssl(*args):
    return subprocess.run(["openssl", *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def ca(tmp_path, edgebridge):
    """root (pathlen 1) -> intermediate (pathlen 0), both by the tool."""
    root, inter = tmp_path / "root", tmp_path / "inter"
    tool("ca", "init", "--dir", root, "--cn", "dev root CA", "--pathlen", "1")
    tool("ca", "intermediate", "--dir", inter, "--parent", root, "--cn", "dev intermediate CA")
    return root, inter


def file_csr(path: Path, cn=None, key=None, org=None) -> Path:
    """A CSR with a file key (not the token's)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
           .sign(key, hashes.SHA256()))
    path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    return path


def load_certs(path: Path):
    """Every certificate in a PEM bundle (cryptography 38 has no helper)."""
    end = b"-----END CERTIFICATE-----"
    return [x509.load_pem_x509_certificate(part + end)
            for part in path.read_bytes().split(end) if b"-----BEGIN" in part]


def write_pems(path: Path, certs) -> Path:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    return path


def check(env, chain, *extra, config=None, proc_env=None):
    cfg = config or env.config_file or env.write_config()
    return run_edgebridge(["-c", Path(cfg), "cert", "check", chain, *extra],
                          env=proc_env or env.token.env)


# --- the CA directory -------------------------------------------------------

def test_ca_init_files_and_extensions(tmp_path, edgebridge):
    d = tmp_path / "rsa-root"
    tool("ca", "init", "--dir", d, "--key-type", "rsa-3072", "--days", "30")
    assert stat.S_IMODE((d / "ca.key").stat().st_mode) == 0o600
    for f in ("ca.pem", "chain.pem", "serial", "index.txt", "crlnumber"):
        assert (d / f).is_file(), f
    cert = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    assert cert.version == x509.Version.v3
    assert cert.issuer == cert.subject
    assert cert.public_key().key_size == 3072
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length is None
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # a second init in the same dir is refused, the key untouched
    before = (d / "ca.key").read_bytes()
    r = tool("ca", "init", "--dir", d, ok=False)
    assert r.returncode == 1 and "already holds a CA" in r.stderr
    assert (d / "ca.key").read_bytes() == before


def test_intermediate_pathlen_rules(ca, tmp_path):
    root, inter = ca
    cert = x509.load_pem_x509_certificate((inter / "ca.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert len(load_certs(inter / "chain.pem")) == 2
    assert "\t1000\t" in (root / "index.txt").read_text()
    # pathlen 0 may sign devices only
    r = tool("ca", "intermediate", "--dir", tmp_path / "i2", "--parent", inter, ok=False)
    assert r.returncode == 1 and "pathlen:0" in r.stderr
    r = tool("ca", "intermediate", "--dir", tmp_path / "i3", "--parent", root,
             "--pathlen", "1", ok=False)
    assert r.returncode == 1 and "--pathlen 1 is too large" in r.stderr


def test_sign_refuses_bad_csrs(ca, tmp_path):
    _, inter = ca
    r = tool("ca", "sign", "--dir", inter, file_csr(tmp_path / "colon.csr", "gw:0001"), ok=False)
    assert r.returncode == 1 and "':'" in r.stderr
    r = tool("ca", "sign", "--dir", inter, file_csr(tmp_path / "nocn.csr", None, org="x"),
             ok=False)
    assert r.returncode == 1 and "no CN" in r.stderr
    # a CSR whose signature was altered (DER, last byte of the signature)
    good = x509.load_pem_x509_csr(file_csr(tmp_path / "g.csr", "gw-0009").read_bytes())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    (tmp_path / "tampered.csr").write_bytes(bytes(der))
    r = tool("ca", "sign", "--dir", inter, tmp_path / "tampered.csr", ok=False)
    assert r.returncode == 1 and "does not verify" in r.stderr
    assert (inter / "index.txt").read_text() == ""  # nothing issued


def test_sign_rsa_csr_gets_key_encipherment(ca, tmp_path):
    _, inter = ca
    csr = file_csr(tmp_path / "rsa.csr", "gw-rsa",
                   key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    tool("ca", "sign", "--dir", inter, csr, "-o", tmp_path / "rsa.pem", "--days", "10")
    leaf = load_certs(tmp_path / "rsa.pem")[0]
    ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment and not ku.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # serials come from the CA dir, one after the other
    tool("ca", "sign", "--dir", inter, csr, "-o", tmp_path / "rsa2.pem")
    assert load_certs(tmp_path / "rsa2.pem")[0].serial_number == leaf.serial_number + 1


# --- a token CSR, openssl verify, cert check --------------------------------

@pytest.fixture
def signed(ca, make_env, tmp_path):
    """An Env whose broker trusts our root (and the harness root, for
    observers), and its token CSR signed by our intermediate."""
    root, inter = ca
    bundle = tmp_path / "client-cas.pem"
    env = make_env(broker_kw={"client_ca_file": bundle})
    bundle.write_bytes((root / "ca.pem").read_bytes() + env.pki.root_file.read_bytes())
    csr = env.dir / "device.csr"
    csr.write_bytes(env.csr)
    leaf, chain = env.dir / "device.pem", env.dir / "device-chain-ca.pem"
    tool("ca", "sign", "--dir", inter, csr, "-o", leaf)
    tool("ca", "sign", "--dir", inter, csr, "-o", chain, "--chain")
    return env, root, inter, leaf, chain


def test_token_csr_signed_and_verified_by_openssl(signed):
    env, root, inter, leaf, chain = signed
    r = openssl("verify", "-CAfile", root / "ca.pem", "-untrusted", inter / "ca.pem", leaf)
    assert r.returncode == 0 and ": OK" in r.stdout, r.stdout
    # Cumulocity's guide: the device cert against the CA uploaded to the
    # tenant, which may be the intermediate alone
    r = openssl("verify", "-partial_chain", "-CAfile", inter / "ca.pem", leaf)
    assert r.returncode == 0 and ": OK" in r.stdout, r.stdout
    r = openssl("verify", "-partial_chain", "-CAfile", chain, leaf)
    assert r.returncode == 0, r.stdout
    certs = load_certs(chain)
    assert [c.subject.rfc4514_string() for c in certs] == [
        "CN=gw-0001", "CN=dev intermediate CA", "CN=dev root CA"]
    # the leaf carries the token's key
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert certs[0].public_key().public_bytes(*fmt) == \
        env.token.public_key().public_bytes(*fmt)


def test_cert_check_passes_the_good_chain(signed):
    env, _, _, _, chain = signed
    r = check(env, chain)
    assert r.returncode == 0, r.stdout + r.stderr
    for rule in RULES:
        assert f"PASS {rule}" in r.stdout, (rule, r.stdout)
    # --json parses, and the token was reached for the key match
    r = check(env, chain, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["failures"] == 0 and doc["cn"] == "gw-0001"
    status = {x["rule"]: x["status"] for x in doc["results"]}
    assert all(status[rule] == "pass" for rule in RULES), status
    # default chain: the configuration's cloud.cert_file
    cfg = env.write_config(cloud={"cert_file": chain})
    r = run_edgebridge(["-c", cfg.path, "--json", "cert", "check"], env=env.token.env)
    assert r.returncode == 0 and json.loads(r.stdout)["file"] == str(chain), r.stdout


@pytest.mark.parametrize("variant,rule", [
    ("leaf", "chain-ca"),
    ("wrong-order", "chain-order"),
    ("other-key", "key-match"),
    ("cn-mismatch", "cn"),
    ("expired", "validity"),
])
def test_cert_check_names_the_broken_rule(signed, tmp_path, variant, rule):
    env, root, inter, leaf, chain = signed
    certs = load_certs(chain)
    extra = []
    if variant == "leaf":
        bad = write_pems(tmp_path / "bad.pem", certs[:1])
    elif variant == "wrong-order":
        bad = write_pems(tmp_path / "bad.pem", list(reversed(certs)))
    elif variant == "other-key":
        bad = tmp_path / "bad.pem"
        tool("ca", "sign", "--dir", inter, file_csr(tmp_path / "o.csr", "gw-0001"),
             "-o", bad, "--chain")
    elif variant == "cn-mismatch":
        bad, extra = chain, ["--cn", "gw-0002"]
    else:  # the harness PKI can backdate: a token cert that expired yesterday
        bad = env.issue_device_chain("expired.pem", **Pki.expired_window())
    r = check(env, bad, *extra)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FAIL {rule}" in r.stdout, r.stdout
    doc = json.loads(check(env, bad, *extra, "--json").stdout)
    assert doc["ok"] is False
    assert any(x["rule"] == rule and x["status"] == "fail" for x in doc["results"]), doc


def test_cert_check_without_token_skips_only_the_key_match(signed, tmp_path):
    env, _, _, _, chain = signed
    # SoftHSM with an empty token directory: the token is not there
    (tmp_path / "empty").mkdir()
    conf = tmp_path / "softhsm2-empty.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'empty'}\n"
                    "objectstore.backend = file\nlog.level = ERROR\n")
    r = check(env, chain, "--json", proc_env={"SOFTHSM2_CONF": str(conf)})
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    km = [x for x in doc["results"] if x["rule"] == "key-match"]
    assert km and km[0]["status"] == "skip" and km[0]["message"].startswith("skipped: ")
    assert all(x["status"] == "pass" for x in doc["results"] if x["rule"] != "key-match")


def test_cert_check_thingsboard_only_warns_without_root(signed, tmp_path):
    env, _, _, _, chain = signed
    bad = write_pems(tmp_path / "noroot.pem", load_certs(chain)[:2])
    assert check(env, bad).returncode == 1
    r = check(env, bad, "--cloud", "thingsboard")
    assert r.returncode == 0, r.stdout
    assert "WARN chain-ca" in r.stdout
    r = check(env, bad, "--cloud", "aws")
    assert r.returncode == 2 and "unknown cloud" in r.stderr


def test_chain_from_ca_sign_accepted_by_broker(signed):
    env, _, _, _, chain = signed
    env.write_config(cloud={"cert_file": chain})
    env.start_broker()
    d = env.daemon()
    d.wait_for_log(env.connected_re(), timeout=30)
    conns = env.broker.wait_client(env.gateway_id)
    assert conns[0].username == env.gateway_id  # the cert CN


def test_crl_revokes(signed, tmp_path):
    env, root, inter, leaf, chain = signed
    serial = format(load_certs(leaf)[0].serial_number, "X")
    tool("ca", "crl", "--dir", inter)  # an empty one first
    crl = x509.load_pem_x509_crl((inter / "crl.pem").read_bytes())
    assert len(list(crl)) == 0
    tool("ca", "crl", "--dir", inter, "--revoke", serial, "-o", tmp_path / "crl.pem")
    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert [c.serial_number for c in crl] == [load_certs(leaf)[0].serial_number]
    assert crl.is_signature_valid(load_certs(inter / "ca.pem")[0].public_key())
    assert any(line.startswith("R\t") and f"\t{serial}\t" in line
               for line in (inter / "index.txt").read_text().splitlines())
    r = openssl("verify", "-crl_check", "-CRLfile", tmp_path / "crl.pem", "-CAfile",
                root / "ca.pem", "-untrusted", inter / "ca.pem", leaf)
    assert r.returncode != 0 and "revoked" in r.stdout, r.stdout
    r = tool("ca", "crl", "--dir", inter, "--revoke", "DEAD", ok=False)
    assert r.returncode == 1 and "not in" in r.stderr
