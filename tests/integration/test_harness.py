"""Self-tests of the harness pieces; these need no edgebridged binary."""

from __future__ import annotations

import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import Broker, Observer, Pki, Token, expect, make_csr_on_token, write_config
from harness.sclient import token_mqtt_publish


def _verify(chain_pem_file, ca_file, purpose="sslclient", extra=()):
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca_file), "-purpose", purpose,
                           "-untrusted", str(chain_pem_file), *extra, str(chain_pem_file)],
                          capture_output=True, text=True, timeout=30)


def test_token_key_is_on_token_and_csr_signed_by_it(tmp_path):
    tok = Token(tmp_path / "tok").init().gen_ec_key()
    assert tok.uri == "pkcs11:token=edgebridge;object=device;type=private"
    assert "pin" not in tok.uri
    objects = tok.list_objects()
    assert "never extractable" in objects and "sensitive" in objects
    csr_pem = make_csr_on_token(tok, "gw-0042")
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-0042"
    assert b"BEGIN PUBLIC KEY" in tok.public_key_pem()
    pin_file = tok.write_pin_file(tmp_path / "pin")
    assert pin_file.stat().st_mode & 0o777 == 0o600
    assert pin_file.read_text() == tok.pin + "\n"
    assert tok.write_pin_file(tmp_path / "pin2", newline=False).read_text() == tok.pin
    # the temp OpenSSL config holding the PIN is gone
    assert not list(tok.dir.glob("openssl-*"))


def test_pki_chains(tmp_path, pki):
    tok = Token(tmp_path / "tok").init().gen_ec_key()
    dev = pki.sign_csr(make_csr_on_token(tok, "gw-1"))
    full = dev.write_chain(tmp_path / "full.pem")
    pems = full.read_bytes().count(b"BEGIN CERTIFICATE")
    assert pems == 3
    certs = x509.load_pem_x509_certificates(full.read_bytes()) \
        if hasattr(x509, "load_pem_x509_certificates") else None
    if certs:
        assert [c.subject for c in certs] == [dev.cert.subject, pki.intermediate.cert.subject,
                                             pki.root.cert.subject]
    assert _verify(full, pki.root_file).returncode == 0
    bc = dev.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    eku = dev.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ibc = pki.intermediate.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert ibc.ca and ibc.path_length == 0
    leaf = dev.write_chain(tmp_path / "leaf.pem", "leaf")
    assert leaf.read_bytes().count(b"BEGIN CERTIFICATE") == 1
    # expired
    exp = pki.sign_csr(make_csr_on_token(tok, "gw-1"), **Pki.expired_window())
    p = exp.write_chain(tmp_path / "exp.pem")
    r = _verify(p, pki.root_file)
    assert r.returncode != 0 and "expired" in (r.stdout + r.stderr)
    # other root is not trusted
    other = Pki(tmp_path / "other", name="untrusted")
    srv = other.server_cert()
    p = srv.write_chain(tmp_path / "srv.pem")
    assert _verify(p, pki.root_file, "sslserver").returncode != 0
    assert _verify(p, other.root_file, "sslserver",
                   ("-verify_ip", "127.0.0.1")).returncode == 0
    wrong = pki.server_cert(cn="wrong.example", ips=(), dns=("wrong.example",))
    p = wrong.write_chain(tmp_path / "wrong.pem")
    r = _verify(p, pki.root_file, "sslserver", ("-verify_ip", "127.0.0.1"))
    assert r.returncode != 0 and "mismatch" in (r.stdout + r.stderr)


def test_broker_observer_roundtrip_and_restart(tmp_path, pki):
    broker = Broker(tmp_path / "b", pki)
    with broker:
        with Observer(broker) as obs:
            pub = pki.client_cert("publisher")
            chain = pub.write_chain(tmp_path / "pub.pem")
            key = pub.write_key(tmp_path / "pub.key")
            cmd = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port),
                   "--cafile", str(broker.server_ca_file), "--cert", str(chain),
                   "--key", str(key), "-i", "pub-1", "-t", "s/us",
                   "-m", "100,x,c8y_EdgeBridge\n200,c8y_T,T,1,C,2026-01-01T00:00:00.000Z"]
            subprocess.run(cmd, check=True, timeout=30)
            lines = obs.wait_lines(n=2, timeout=10)
            assert [l.text for l in lines][:2] == [
                "100,x,c8y_EdgeBridge", "200,c8y_T,T,1,C,2026-01-01T00:00:00.000Z"]
            assert lines[0].msg_index == lines[1].msg_index
            assert ("pub-1", "publisher") in [(c.client_id, c.username)
                                              for c in broker.clients()]
            m = expect.parse_measurement(lines[1].text)
            assert (m.fragment, m.series, m.value, m.unit) == ("c8y_T", "T", 1.0, "C")
            port = broker.port
            n = obs.connects
            broker.restart()
            assert broker.port == port
            obs.wait_subscribed(n + 1)
            subprocess.run(cmd[:-1] + ["200,c8y_T,T,2,C,2026-01-01T00:00:01.000Z"],
                           check=True, timeout=30)
            obs.wait_lines(lambda l: ",2,C," in l.text, timeout=10)
    assert not broker.running


def test_broker_rejects_client_without_cert_from_pki(tmp_path, pki):
    other = Pki(tmp_path / "other", name="untrusted")
    with Broker(tmp_path / "b", pki) as broker:
        obs = Observer(broker, cert=other.client_cert("intruder"), client_id="intruder")
        with pytest.raises(Exception):
            obs.start(timeout=1.5)
        obs.stop()


def test_token_key_authenticates_via_openssl_engine(harness_env):
    """openssl s_client with -engine pkcs11 and the token key: the broker
    accepts it as gw-0001 and the published lines reach the observer."""
    env = harness_env
    env.start_broker()
    obs = env.observer()
    r = token_mqtt_publish(env.token, env.broker.host, env.broker.port, env.cert_file,
                           env.broker.server_ca_file, env.gateway_id, "s/us",
                           b"100,Test gateway,c8y_EdgeBridge")
    assert r.returncode == 0, r.stderr
    assert r.stdout[:4] == b"\x20\x02\x00\x00", r.stdout  # CONNACK accepted
    obs.wait_lines(lambda l: l.text.startswith("100,"), timeout=10)
    assert (env.gateway_id, env.gateway_id) in [(c.client_id, c.username)
                                                for c in env.broker.clients()]
    # a leaf-only chain is refused by the broker (it needs the intermediate)
    leaf = env.issue_device_chain("leaf.pem", variant="leaf")
    r = token_mqtt_publish(env.token, env.broker.host, env.broker.port, leaf,
                           env.broker.server_ca_file, "gw-leaf", "s/us", b"x")
    assert r.stdout[:4] != b"\x20\x02\x00\x00"
    assert "gw-leaf" not in env.broker.client_ids()


def test_config_writer_line_numbers(tmp_path):
    cfg = write_config(tmp_path / "a.conf", gateway={"id": "gw-1", "name": None},
                       sensor__boiler={"driver": "sim", "interval": "1s"})
    assert cfg.text == "[gateway]\nid = gw-1\n\n[sensor.boiler]\ndriver = sim\ninterval = 1s\n"
    assert cfg.line_of("id", "gateway") == 2
    assert cfg.line_of("interval", "sensor.boiler") == 6
    assert cfg.line_of("", "sensor.boiler") == 4
    drop = cfg.add_dropin("10-x.conf", gateway={"id": "gw-2"})
    assert drop.path == tmp_path / "conf.d" / "10-x.conf"


def test_demo_script_compiles():
    from harness import REPO_ROOT
    path = REPO_ROOT / "scripts" / "demo.py"
    compile(path.read_text(), str(path), "exec")
