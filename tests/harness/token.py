"""A SoftHSM2 token living in a temp dir, and CSRs signed by its key."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from .util import HarnessError, run, write_private

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PKCS11_SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
PKCS11_ENGINE = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"

DEFAULT_SO_PIN = "so-8765-4321"
DEFAULT_PIN = "s3cr3t-PIN-4711"  # distinctive, so a leak is easy to grep for


class Token:
    """One SoftHSM2 token in its own directory.

    >>> tok = Token(tmp / "token"); tok.init(); tok.gen_ec_key()
    >>> tok.env     # {"SOFTHSM2_CONF": ".../softhsm2.conf"}
    >>> tok.uri     # pkcs11:token=edgebridge;object=device;type=private
    """

    module = SOFTHSM_MODULE

    def __init__(self, dir: Path | str):
        self.dir = Path(dir)
        self.tokendir = self.dir / "tokens"
        self.tokendir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "softhsm2.conf"
        self.conf_path.write_text(
            f"directories.tokendir = {self.tokendir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n")
        self.label: Optional[str] = None
        self.so_pin: Optional[str] = None
        self.pin: Optional[str] = None
        self.key_label: Optional[str] = None
        self.key_id: Optional[str] = None

    # -- environment ---------------------------------------------------------
    @property
    def env(self) -> dict:
        """Environment every process using this token needs."""
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    def spy_env(self, output: Path | str) -> dict:
        """Env for loading pkcs11-spy.so in front of SoftHSM, logging to `output`."""
        return {**self.env, "PKCS11SPY": self.module, "PKCS11SPY_OUTPUT": str(output)}

    # -- setup ---------------------------------------------------------------
    def init(self, label: str = "edgebridge", so_pin: str = DEFAULT_SO_PIN,
             pin: str = DEFAULT_PIN) -> "Token":
        run(["softhsm2-util", "--init-token", "--free", "--label", label,
             "--so-pin", so_pin, "--pin", pin], env=self.env)
        self.label, self.so_pin, self.pin = label, so_pin, pin
        return self

    def attach(self, label: str = "edgebridge", pin: str = DEFAULT_PIN,
               key_label: str = "device", key_id: str = "01",
               so_pin: Optional[str] = None) -> "Token":
        """Use a token that an earlier Token(dir).init() created in this dir."""
        self.label, self.pin, self.so_pin = label, pin, so_pin
        self.key_label, self.key_id = key_label, key_id
        return self

    def _tool(self, *args: str, login: bool = True, timeout: float = 60):
        if self.label is None:
            raise HarnessError("token not initialised: call init() first")
        cmd = ["pkcs11-tool", "--module", self.module, "--token-label", self.label]
        if login:
            cmd += ["--login", "--pin", self.pin]
        return run(cmd + list(args), env=self.env, timeout=timeout)

    def gen_ec_key(self, label: str = "device", curve: str = "prime256v1",
                   id: str = "01") -> "Token":
        """Generate an EC key pair ON the token (private key never leaves it)."""
        self._tool("--keypairgen", "--key-type", f"EC:{curve}",
                   "--label", label, "--id", id)
        self.key_label, self.key_id = label, id
        return self

    # -- identities ----------------------------------------------------------
    def key_uri(self, object: Optional[str] = None, type: str = "private") -> str:
        """RFC 7512 URI of a key; never contains the PIN."""
        return f"pkcs11:token={self.label};object={object or self.key_label};type={type}"

    @property
    def uri(self) -> str:
        return self.key_uri()

    def write_pin_file(self, path: Path | str, pin: Optional[str] = None,
                       newline: bool = True, mode: int = 0o600) -> Path:
        pin = self.pin if pin is None else pin
        return write_private(Path(path), pin + ("\n" if newline else ""), mode)

    def public_key_der(self) -> bytes:
        out = self.dir / "pub.der"
        self._tool("--read-object", "--type", "pubkey", "--label", self.key_label,
                   "-o", str(out), login=False)
        return out.read_bytes()

    def public_key_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        key = serialization.load_der_public_key(self.public_key_der())
        return key.public_bytes(serialization.Encoding.PEM,
                                serialization.PublicFormat.SubjectPublicKeyInfo)

    def public_key(self):
        from cryptography.hazmat.primitives import serialization
        return serialization.load_der_public_key(self.public_key_der())

    def list_objects(self) -> str:
        return self._tool("--list-objects").stdout.decode()

    # -- OpenSSL engine ------------------------------------------------------
    @contextlib.contextmanager
    def openssl_env(self, pin: Optional[str] = None) -> Iterator[dict]:
        """Env (incl. a temp OPENSSL_CONF) under which `openssl ... -engine pkcs11
        -keyform engine -key <uri>` uses this token's key.

        The PIN lives only in a 0600 temp config file, removed on exit; it is
        never put into a URI (no pin-value).
        """
        pin = self.pin if pin is None else pin
        tmp = Path(tempfile.mkdtemp(prefix="openssl-", dir=self.dir))
        try:
            conf = tmp / "openssl.cnf"
            write_private(conf, (
                "openssl_conf = openssl_init\n"
                "[openssl_init]\n"
                "engines = engine_section\n"
                "[engine_section]\n"
                "pkcs11 = pkcs11_section\n"
                "[pkcs11_section]\n"
                "engine_id = pkcs11\n"
                f"dynamic_path = {PKCS11_ENGINE}\n"
                f"MODULE_PATH = {self.module}\n"
                f"PIN = {pin}\n"
                "init = 0\n"
                "[req]\n"
                "distinguished_name = req_dn\n"
                "prompt = no\n"
                "[req_dn]\n"))
            yield {**self.env, "OPENSSL_CONF": str(conf)}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def make_csr_on_token(token: Token, cn: str, out: Optional[Path] = None) -> bytes:
    """Return a PEM CSR for CN=`cn`, signed by the token's private key.

    The signature is checked with `openssl req -verify`; the CSR is also written
    to `out` (default <token.dir>/<cn>.csr).
    """
    out = Path(out) if out else token.dir / f"{cn}.csr"
    with token.openssl_env() as env:
        run(["openssl", "req", "-new", "-engine", "pkcs11", "-keyform", "engine",
             "-key", token.uri, "-subj", f"/CN={cn}", "-sha256", "-out", str(out)],
            env=env)
    run(["openssl", "req", "-in", str(out), "-verify", "-noout"])
    pem = out.read_bytes()
    # the CSR must carry the token's public key
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if x509.load_pem_x509_csr(pem).public_key().public_bytes(*fmt) != \
            token.public_key().public_bytes(*fmt):
        raise HarnessError("CSR public key differs from the token's key")
    return pem
