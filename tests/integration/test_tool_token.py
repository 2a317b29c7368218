"""`edgebridge token list|init` and `key create|list` against real SoftHSM2
tokens in temp dirs: an uninitialised token is initialised with PINs from
files (or a prompt on a terminal, never argv), keys are generated on the
token, sensitive and never extractable, and the printed RFC 7512 URI works
with the daemon's engine."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import termios
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from harness import (DEFAULT_PIN, DEFAULT_SO_PIN, Token, run_edgebridge, tool_binary,
                     write_config)
from harness.util import write_private

LABEL = "edgebridge"


@pytest.fixture(scope="module", autouse=True)
def _binary():
    if not tool_binary().is_file():
        pytest.fail(f"edgebridge binary not found at {tool_binary()}: run "
                    "`make build/edgebridge` (or set EDGEBRIDGE)", pytrace=False)


class Setup:
    """An UNinitialised SoftHSM2 token (empty tokendir: one free slot), PIN
    files and a valid configuration naming the token."""

    def __init__(self, dir: Path):
        self.dir = dir
        self.token = Token(dir / "token")
        self.pin_file = self.token.write_pin_file(dir / "pin", DEFAULT_PIN)
        self.so_pin_file = write_private(dir / "so-pin", DEFAULT_SO_PIN + "\n")
        (dir / "ca.pem").write_text("placeholder\n")
        (dir / "chain.pem").write_text("placeholder\n")
        self.config = write_config(dir / "edgebridge.conf", {
            "gateway": {"id": "gw-0001", "state_dir": dir},
            "hsm": {"module": self.token.module,
                    "key": f"pkcs11:token={LABEL};object=device",
                    "pin_file": self.pin_file},
            "cloud": {"host": "127.0.0.1", "ca_file": dir / "ca.pem",
                      "cert_file": dir / "chain.pem"},
        })
        self.outputs: list[str] = []

    def run(self, *args, **kw) -> subprocess.CompletedProcess:
        r = run_edgebridge(["-c", self.config.path, *args], env=self.token.env, **kw)
        self.outputs += [r.stdout, r.stderr]
        return r

    def init(self, *extra) -> subprocess.CompletedProcess:
        r = self.run("token", "init", "--label", LABEL, "--so-pin-file",
                     self.so_pin_file, "--pin-file", self.pin_file, *extra)
        assert r.returncode == 0, r.stderr
        # the harness Token now knows the PINs for pkcs11-tool
        self.token.attach(label=LABEL, pin=DEFAULT_PIN, so_pin=DEFAULT_SO_PIN)
        return r

    def tokens(self) -> list:
        r = self.run("token", "list", "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def pkcs11_tool(self, *args, pin=DEFAULT_PIN, check=False):
        cmd = ["pkcs11-tool", "--module", self.token.module, "--token-label", LABEL]
        if pin is not None:
            cmd += ["--login", "--pin", pin]
        return subprocess.run(cmd + list(map(str, args)),
                              env={**os.environ, **self.token.env},
                              capture_output=True, text=True, timeout=60, check=check)

    def assert_no_pin_leak(self):
        for out in self.outputs:
            assert DEFAULT_PIN not in out
            assert DEFAULT_SO_PIN not in out


@pytest.fixture
def setup(tmp_path):
    s = Setup(tmp_path)
    yield s
    s.assert_no_pin_leak()


@pytest.fixture
def ready(setup):
    """An initialised token."""
    setup.init()
    return setup


# -- token list ---------------------------------------------------------------

def test_token_list_fresh(setup):
    r = setup.run("token", "list")
    assert r.returncode == 0, r.stderr
    assert "token:        present" in r.stdout
    assert "NOT INITIALISED" in r.stdout
    tokens = setup.tokens()
    assert len(tokens) == 1
    t = tokens[0]
    assert t["token_present"] is True
    assert t["flags"]["initialized"] is False
    assert t["flags"]["user_pin_initialized"] is False
    assert t["manufacturer"] == "SoftHSM project"
    assert {"slot", "description", "label", "model", "serial"} <= t.keys()


def test_token_list_initialised(ready):
    r = ready.run("token", "list")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  label: +edgebridge$", r.stdout, re.M)
    assert "initialised, user PIN initialised, login required" in r.stdout
    # SoftHSM offers a new free slot after each initialisation
    blocks = [b for b in r.stdout.split("\n\n") if b.strip()]
    assert len(blocks) == 2
    tokens = ready.tokens()
    mine = [t for t in tokens if t["label"] == LABEL]
    assert len(mine) == 1
    flags = mine[0]["flags"]
    assert flags["initialized"] and flags["user_pin_initialized"]
    assert flags["login_required"]
    assert not flags["user_pin_locked"]
    assert re.fullmatch(r"[0-9a-f]{16}", mine[0]["serial"])


def test_global_json_option_works_too(ready):
    r = ready.run("--json", "token", "list")
    assert r.returncode == 0, r.stderr
    assert isinstance(json.loads(r.stdout), list)


# -- token init ---------------------------------------------------------------

def test_token_init_with_pin_files(setup):
    r = setup.init()
    assert "initialised token 'edgebridge'" in r.stdout
    # the token takes the user PIN (and only it)
    ok = setup.pkcs11_tool("--test")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = setup.pkcs11_tool("--test", pin="not-the-pin")
    assert bad.returncode != 0
    # and the SO PIN
    so = subprocess.run(["pkcs11-tool", "--module", setup.token.module,
                         "--token-label", LABEL, "--login", "--login-type", "so",
                         "--so-pin", DEFAULT_SO_PIN, "--session-rw", "--list-objects"],
                        env={**os.environ, **setup.token.env},
                        capture_output=True, text=True, timeout=60)
    assert so.returncode == 0, so.stdout + so.stderr


def test_token_init_refuses_reinit_without_force(ready):
    ready.token.gen_ec_key("precious", id="42")
    r = ready.run("token", "init", "--label", LABEL, "--so-pin-file",
                  ready.so_pin_file, "--pin-file", ready.pin_file)
    assert r.returncode == 1
    assert "already initialised" in r.stderr
    assert "--force" in r.stderr
    assert "precious" in ready.token.list_objects()
    assert len([t for t in ready.tokens() if t["label"] == LABEL]) == 1
    # --force (with the current SO PIN) erases it
    ready.init("--force")
    assert "precious" not in ready.token.list_objects()
    assert len([t for t in ready.tokens() if t["label"] == LABEL]) == 1


def test_token_init_force_needs_the_current_so_pin(ready):
    wrong = write_private(ready.dir / "wrong-so", "wrong-so-pin\n")
    r = ready.run("token", "init", "--label", LABEL, "--so-pin-file", wrong,
                  "--pin-file", ready.pin_file, "--force")
    assert r.returncode == 77, r.stderr
    assert "SO PIN" in r.stderr
    assert "wrong-so-pin" not in r.stdout + r.stderr


@pytest.mark.parametrize("missing", ["--so-pin-file", "--pin-file"])
def test_token_init_refuses_without_pin_source(setup, missing):
    args = ["token", "init", "--label", LABEL]
    if missing != "--so-pin-file":
        args += ["--so-pin-file", setup.so_pin_file]
    if missing != "--pin-file":
        args += ["--pin-file", setup.pin_file]
    r = setup.run(*args)  # stdin is /dev/null: no terminal, no prompt
    assert r.returncode == 2
    assert "not a terminal" in r.stderr
    assert missing in r.stderr
    assert "never taken from the command line" in r.stderr
    assert setup.tokens()[0]["flags"]["initialized"] is False


def test_token_init_refuses_pin_of_wrong_length(setup):
    short = write_private(setup.dir / "short", "123\n")
    r = setup.run("token", "init", "--label", LABEL, "--so-pin-file",
                  setup.so_pin_file, "--pin-file", short)
    assert r.returncode == 1
    assert "characters" in r.stderr
    assert setup.tokens()[0]["flags"]["initialized"] is False


def test_token_init_refuses_long_label(setup):
    r = setup.run("token", "init", "--label", "x" * 33, "--so-pin-file",
                  setup.so_pin_file, "--pin-file", setup.pin_file)
    assert r.returncode == 2
    assert "32 bytes" in r.stderr


def _wait_prompt(proc, master, err: bytearray, prompt: bytes, timeout=20):
    """Until `prompt` is on stderr and the terminal's echo is off (the tool
    has flushed the terminal: only now may the answer be typed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if prompt in err and not termios.tcgetattr(master)[3] & termios.ECHO:
            return
        ready, _, _ = select.select([proc.stderr], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk and proc.poll() is not None:
                break
            err += chunk
    raise AssertionError(f"no prompt {prompt!r}; stderr so far: {bytes(err)!r}")


def test_token_init_prompts_without_echo_on_a_terminal(setup):
    master, slave = os.openpty()
    proc = subprocess.Popen([str(tool_binary()), "-c", str(setup.config.path), "token",
                             "init", "--label", LABEL],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **setup.token.env})
    os.close(slave)
    err = bytearray()
    try:
        for prompt, answer in ((b"New SO PIN", DEFAULT_SO_PIN),
                               (b"Repeat the SO PIN", DEFAULT_SO_PIN),
                               (b"New user PIN", DEFAULT_PIN),
                               (b"Repeat the user PIN", DEFAULT_PIN)):
            _wait_prompt(proc, master, err, prompt)
            err.clear()
            os.write(master, (answer + "\n").encode())
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    setup.outputs += [out.decode(), (bytes(err) + rest).decode()]
    assert proc.returncode == 0, rest
    setup.token.attach(label=LABEL)
    assert setup.pkcs11_tool("--test").returncode == 0


# -- key create ---------------------------------------------------------------

def _objects(ready: Setup) -> str:
    r = ready.pkcs11_tool("--list-objects")
    assert r.returncode == 0, r.stderr
    return r.stdout


def _object_block(listing: str, kind: str, label: str) -> str:
    for block in re.split(r"\n(?=\S)", listing):
        if block.startswith(kind) and re.search(rf"label:\s+{re.escape(label)}\s*$",
                                                block, re.M):
            return block
    raise AssertionError(f"no {kind} labelled {label} in:\n{listing}")


CKR_ATTRIBUTE_SENSITIVE = 0x11

# Reads attributes of the key pair labelled argv[2] on token argv[1] through
# the module's own C API (ctypes), logged in with the PIN from stdin: what
# the token really holds, independent of edgebridge and pkcs11-tool.
RAW_PKCS11 = r"""
import ctypes as C, json, sys
UL = C.c_ulong
class Attr(C.Structure):
    _fields_ = [("type", UL), ("value", C.c_void_p), ("len", UL)]
lib = C.CDLL(sys.argv[3])
fl = C.POINTER(C.c_void_p)()
assert lib.C_GetFunctionList(C.byref(fl)) == 0
# CK_FUNCTION_LIST: a 2-byte version, then the functions in spec order
base = C.cast(fl, C.c_void_p).value + C.sizeof(C.c_void_p)
def fn(i, *argt):
    addr = C.c_void_p.from_address(base + i * C.sizeof(C.c_void_p)).value
    return C.CFUNCTYPE(UL, *argt)(addr)
P = C.c_void_p
Initialize, GetSlotList, GetTokenInfo = fn(0, P), fn(4, C.c_ubyte, P, P), fn(6, UL, P)
OpenSession, Login = fn(12, UL, UL, P, P, P), fn(18, UL, UL, C.c_char_p, UL)
GetAttributeValue = fn(24, UL, UL, P, UL)
FindInit, Find, FindFinal = fn(26, UL, P, UL), fn(27, UL, P, UL, P), fn(28, UL)
assert Initialize(None) == 0
n = UL(0); GetSlotList(1, None, C.byref(n)); slots = (UL * n.value)()
assert GetSlotList(1, slots, C.byref(n)) == 0
slot = None
for s in slots:
    info = (C.c_ubyte * 256)()
    if GetTokenInfo(s, info) == 0 and bytes(info[:32]).decode().rstrip() == sys.argv[1]:
        slot = s
h = UL()
assert OpenSession(slot, 6, None, None, C.byref(h)) == 0
pin = sys.stdin.read().encode()
assert Login(h, 1, pin, len(pin)) == 0
def find(cls, label):
    c = UL(cls); lab = C.create_string_buffer(label.encode())
    t = (Attr * 2)(Attr(0, C.cast(C.byref(c), P), C.sizeof(c)),
                   Attr(3, C.cast(lab, P), len(label)))
    assert FindInit(h, t, 2) == 0
    objs = (UL * 4)(); cnt = UL()
    assert Find(h, objs, 4, C.byref(cnt)) == 0
    FindFinal(h)
    assert cnt.value == 1, cnt.value
    return objs[0]
def get(o, typ, size=256):
    buf = (C.c_ubyte * size)(); a = Attr(typ, C.cast(buf, P), size)
    rv = GetAttributeValue(h, o, C.byref(a), 1)
    return rv, bytes(buf[:a.len]) if rv == 0 else None
names = {"CKA_TOKEN": 1, "CKA_PRIVATE": 2, "CKA_SENSITIVE": 0x103,
         "CKA_EXTRACTABLE": 0x162, "CKA_SIGN": 0x108, "CKA_DECRYPT": 0x105,
         "CKA_UNWRAP": 0x107, "CKA_DERIVE": 0x10c, "CKA_VERIFY": 0x10a,
         "CKA_ENCRYPT": 0x104, "CKA_WRAP": 0x106}
priv, pub = find(3, sys.argv[2]), find(2, sys.argv[2])
out = {"private": {}, "public": {}}
for k in ("CKA_TOKEN", "CKA_PRIVATE", "CKA_SENSITIVE", "CKA_EXTRACTABLE", "CKA_SIGN",
          "CKA_DECRYPT", "CKA_UNWRAP", "CKA_DERIVE"):
    out["private"][k] = get(priv, names[k])[1][0]
for k in ("CKA_TOKEN", "CKA_VERIFY", "CKA_ENCRYPT", "CKA_WRAP"):
    out["public"][k] = get(pub, names[k])[1][0]
key_type = int.from_bytes(get(priv, 0x100)[1], sys.byteorder)
# CKA_VALUE (EC) / CKA_PRIVATE_EXPONENT (RSA)
out["value_rv"] = get(priv, 0x11 if key_type == 3 else 0x123, 4096)[0]
out["label_matches"] = get(priv, 3)[1] == get(pub, 3)[1] == sys.argv[2].encode()
out["id_matches"] = get(priv, 0x102)[1] == get(pub, 0x102)[1]
print(json.dumps(out))
"""


def _raw_attributes(s: Setup, label: str) -> dict:
    r = subprocess.run(["/usr/bin/python3", "-c", RAW_PKCS11, LABEL, label,
                        s.token.module], input=DEFAULT_PIN, capture_output=True,
                       text=True, timeout=60, env={**os.environ, **s.token.env})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _engine_public_key(ready: Setup, uri: str) -> bytes:
    """The public key of `uri` as the daemon's engine (libp11) sees it."""
    with ready.token.openssl_env() as env:
        r = subprocess.run(["openssl", "pkey", "-engine", "pkcs11", "-inform", "engine",
                            "-in", uri, "-pubout"], env={**os.environ, **env},
                           capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def _engine_sign_and_verify(ready: Setup, uri: str, pub_pem: bytes) -> None:
    data, sig, pub = ready.dir / "data", ready.dir / "data.sig", ready.dir / "pub.pem"
    data.write_bytes(b"edgebridge " * 10)
    pub.write_bytes(pub_pem)
    with ready.token.openssl_env() as env:
        r = subprocess.run(["openssl", "dgst", "-sha256", "-engine", "pkcs11",
                            "-keyform", "engine", "-sign", uri, "-out", sig, data],
                           env={**os.environ, **env}, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pub, "-signature", sig,
                        data], capture_output=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def _spki(pem: bytes) -> bytes:
    return serialization.load_pem_public_key(pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.mark.parametrize("type,kind,size", [
    ("ec-p256", "EC", "P-256"),
    ("ec-p384", "EC", "P-384"),
    ("rsa-2048", "RSA", 2048),
])
def test_key_create(ready, type, kind, size):
    label = f"dev-{type}"
    r = ready.run("key", "create", "--type", type, "--label", label)
    assert r.returncode == 0, r.stderr
    uri = r.stdout.strip()
    assert uri == f"pkcs11:token={LABEL};object={label};type=private"
    assert "pin" not in uri
    assert "[hsm] key" in r.stderr

    listing = _objects(ready)
    priv = _object_block(listing, "Private Key Object", label)
    pub = _object_block(listing, "Public Key Object", label)
    assert kind in priv.splitlines()[0]
    access = re.search(r"Access:\s*(.*)", priv).group(1)
    assert "never extractable" in access and "always sensitive" in access
    assert re.search(r"(^|, )sensitive", access)
    assert re.search(r"Usage:\s*sign\s*$", priv, re.M), priv  # no decrypt/unwrap/derive
    assert re.search(r"Usage:\s*verify\s*$", pub, re.M), pub  # no encrypt/wrap
    id_priv = re.search(r"ID:\s*(\w+)", priv).group(1)
    assert id_priv == re.search(r"ID:\s*(\w+)", pub).group(1)
    assert len(id_priv) == 16  # random 8-byte id

    # straight from the module: the template as asked, the value unreadable
    a = _raw_attributes(ready, label)
    assert a["private"] == {"CKA_TOKEN": 1, "CKA_PRIVATE": 1, "CKA_SENSITIVE": 1,
                            "CKA_EXTRACTABLE": 0, "CKA_SIGN": 1, "CKA_DECRYPT": 0,
                            "CKA_UNWRAP": 0, "CKA_DERIVE": 0}
    assert a["public"] == {"CKA_TOKEN": 1, "CKA_VERIFY": 1, "CKA_ENCRYPT": 0,
                           "CKA_WRAP": 0}
    assert a["value_rv"] == CKR_ATTRIBUTE_SENSITIVE
    assert a["label_matches"] and a["id_matches"]

    # the URI works with the daemon-side engine: it signs, and the signature
    # verifies with the token's public key
    pem = _engine_public_key(ready, uri)
    _engine_sign_and_verify(ready, uri, pem)
    if type != "ec-p384":  # pkcs11-tool 0.23 cannot read P-384 public keys
        ready.token.key_label = label
        assert _spki(pem) == _spki(ready.token.public_key_pem())

    # key list agrees
    lst = ready.run("key", "list", "--json")
    assert lst.returncode == 0, lst.stderr
    keys = {k["label"]: k for k in json.loads(lst.stdout)}
    k = keys[label]
    assert k["type"] == type and k["id"] == id_priv and k["uri"] == uri
    assert k["sensitive"] and not k["extractable"]
    assert k["always_sensitive"] and k["never_extractable"]
    if kind == "EC":
        assert k["curve"] == size
    else:
        assert k["bits"] == size and k["curve"] is None


def test_key_create_given_id_and_escaped_label_works_with_the_engine(ready):
    label = "boiler key/1;x"
    r = ready.run("key", "create", "--type", "ec-p256", "--label", label,
                  "--id", "0a1B", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["id"] == "0a1b" and out["label"] == label
    uri = out["uri"]
    assert uri == f"pkcs11:token={LABEL};object=boiler%20key%2F1%3Bx;type=private"
    ready.token.key_label = label
    assert _spki(_engine_public_key(ready, uri)) == _spki(ready.token.public_key_pem())
    # the same id again is refused
    again = ready.run("key", "create", "--type", "ec-p256", "--label", "other",
                      "--id", "0a1b")
    assert again.returncode == 1
    assert "--id" in again.stderr


def test_key_uri_from_key_create_works_with_make_csr(ready):
    from harness import make_csr_on_token
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "device", "--id", "01")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ready.token.key_uri("device")
    ready.token.key_label, ready.token.key_id = "device", "01"
    make_csr_on_token(ready.token, "gw-0001", ready.dir / "gw.csr")


@pytest.mark.parametrize("type,needle", [
    ("rsa-1024", "2048"),
    ("rsa-512", "2048"),
    ("dsa-2048", "unknown key type"),
    ("ec-p192", "unknown key type"),
])
def test_key_create_refuses_weak_or_unknown_types(ready, type, needle):
    r = ready.run("key", "create", "--type", type, "--label", "weak")
    assert r.returncode == 2
    assert needle in r.stderr
    assert "weak" not in _objects(ready)


def test_key_create_refuses_an_existing_label(ready):
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "device")
    assert r.returncode == 0, r.stderr
    before = _objects(ready)
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "device")
    assert r.returncode == 1
    assert "already has an object labelled 'device'" in r.stderr
    assert "choose another --label" in r.stderr
    assert _objects(ready).count("label:      device") == before.count("label:      device")


def test_key_create_wrong_pin_exits_77(ready):
    wrong = ready.token.write_pin_file(ready.dir / "wrong-pin", "wrong-4711")
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "device",
                  "--pin-file", wrong)
    assert r.returncode == 77, r.stderr
    assert "PIN incorrect" in r.stderr and "not retried" in r.stderr
    assert "wrong-4711" not in r.stdout + r.stderr
    assert "device" not in _objects(ready)
    r = ready.run("key", "list", "--pin-file", wrong)
    assert r.returncode == 77


def test_key_create_uses_the_configured_pin_file(ready):
    write_private(ready.pin_file, "wrong-4711\n")
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "device")
    assert r.returncode == 77
    assert str(ready.pin_file) in r.stderr


def test_key_create_on_a_named_token(ready):
    r = ready.run("key", "create", "--type", "ec-p256", "--label", "d",
                  "--token", "no-such-token")
    assert r.returncode == 69
    assert "no-such-token" in r.stderr


# -- key list -----------------------------------------------------------------

def test_key_list(ready):
    r = ready.run("key", "list")
    assert r.returncode == 0, r.stderr
    assert "no private keys" in r.stdout
    assert json.loads(ready.run("key", "list", "--json").stdout) == []
    for t, label in (("ec-p256", "a"), ("rsa-2048", "b")):
        assert ready.run("key", "create", "--type", t, "--label", label).returncode == 0
    r = ready.run("key", "list")
    assert r.returncode == 0, r.stderr
    assert "type:  EC P-256" in r.stdout
    assert "type:  RSA 2048 bits" in r.stdout
    assert "sensitive, not extractable, always sensitive, never extractable" in r.stdout
    assert f"uri:   pkcs11:token={LABEL};object=a;type=private" in r.stdout
    keys = json.loads(ready.run("key", "list", "--json").stdout)
    assert sorted(k["label"] for k in keys) == ["a", "b"]
