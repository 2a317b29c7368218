"""Test PKI built with python3-cryptography: root -> intermediate -> leaves.

CA keys are plain files (fine for tests); device keys stay on the token and
only their CSRs are signed here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .util import write_private

CHAIN_VARIANTS = ("full", "leaf", "leaf+intermediate", "wrong-order")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _name(cn: str, org: Optional[str] = None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class Issued:
    """A certificate, its (file) key if we have one, and the CAs above it
    (nearest first, ending with the self-signed root)."""

    cert: x509.Certificate
    key: Optional[object] = None
    chain: List[x509.Certificate] = field(default_factory=list)

    @property
    def cn(self) -> str:
        return self.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    @property
    def cert_pem(self) -> bytes:
        return _pem(self.cert)

    @property
    def key_pem(self) -> bytes:
        if self.key is None:
            raise ValueError(f"no file key for {self.cn} (key lives on a token?)")
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def chain_pem(self, variant: str = "full") -> bytes:
        """PEM bundle of the leaf and its CAs.

        full: leaf + intermediate(s) + root (what Cumulocity wants)
        leaf: leaf only
        leaf+intermediate: without the root
        wrong-order: root + intermediate(s) + leaf
        """
        if variant == "full":
            certs = [self.cert, *self.chain]
        elif variant == "leaf":
            certs = [self.cert]
        elif variant == "leaf+intermediate":
            certs = [self.cert, *self.chain[:-1]]
        elif variant == "wrong-order":
            certs = [*reversed(self.chain), self.cert]
        else:
            raise ValueError(f"unknown chain variant {variant!r}; use {CHAIN_VARIANTS}")
        return b"".join(_pem(c) for c in certs)

    def write_cert(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.cert_pem)
        return path

    def write_key(self, path: Path | str) -> Path:
        return write_private(Path(path), self.key_pem)

    def write_chain(self, path: Path | str, variant: str = "full") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.chain_pem(variant))
        return path


class Pki:
    """Root CA + intermediate CA (pathlen 0) in `dir`; signs leaves.

    Files written: root.pem, root.key, intermediate.pem, intermediate.key.
    A second Pki(other_dir, name="untrusted") is an unrelated hierarchy,
    e.g. for a broker whose server cert the daemon must not trust.
    """

    FILES = ("root.pem", "root.key", "intermediate.pem", "intermediate.key")

    def __init__(self, dir: Path | str, name: str = "edgebridge test",
                 days: int = 3650):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._create(days)

    @classmethod
    def exists(cls, dir: Path | str) -> bool:
        return all((Path(dir) / f).is_file() for f in cls.FILES)

    @classmethod
    def load(cls, dir: Path | str) -> "Pki":
        """Reuse a hierarchy a previous Pki(dir) wrote (e.g. the demo's)."""
        self = cls.__new__(cls)
        self.dir = Path(dir)

        def cert(name):
            return x509.load_pem_x509_certificate((self.dir / name).read_bytes())

        def key(name):
            return serialization.load_pem_private_key((self.dir / name).read_bytes(), None)
        root = cert("root.pem")
        self.root = Issued(root, key("root.key"), [])
        self.intermediate = Issued(cert("intermediate.pem"), key("intermediate.key"), [root])
        self.name = self.root.cn.rsplit(" root CA", 1)[0]
        self.root_file = self.dir / "root.pem"
        self.intermediate_file = self.dir / "intermediate.pem"
        return self

    def _create(self, days: int) -> None:
        name = self.name
        now = _now()
        root_key = new_key()
        root_name = _name(f"{name} root CA", name)
        root_cert = (
            x509.CertificateBuilder()
            .subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(self._ca_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()),
                           critical=False)
            .sign(root_key, hashes.SHA256()))
        self.root = Issued(root_cert, root_key, [])
        inter_key = new_key()
        self.intermediate = self._issue(
            self.root, _name(f"{name} intermediate CA", name), inter_key.public_key(),
            ca_pathlen=0, not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=days))
        self.intermediate.key = inter_key
        self.root_file = self.root.write_cert(self.dir / "root.pem")
        self.root.write_key(self.dir / "root.key")
        self.intermediate_file = self.intermediate.write_cert(self.dir / "intermediate.pem")
        self.intermediate.write_key(self.dir / "intermediate.key")

    # -- internals -----------------------------------------------------------
    @staticmethod
    def _ca_usage() -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=False, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                             encipher_only=False, decipher_only=False)

    @staticmethod
    def _leaf_usage() -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                             encipher_only=False, decipher_only=False)

    def _issue(self, ca: Issued, subject: x509.Name, public_key, *,
               ca_pathlen: Optional[int] = None, eku: Sequence = (),
               san: Optional[Sequence[x509.GeneralName]] = None,
               not_before: Optional[dt.datetime] = None,
               not_after: Optional[dt.datetime] = None) -> Issued:
        now = _now()
        not_before = not_before or now - dt.timedelta(minutes=5)
        not_after = not_after or now + dt.timedelta(days=365)
        b = (x509.CertificateBuilder()
             .subject_name(subject).issuer_name(ca.cert.subject)
             .public_key(public_key)
             .serial_number(x509.random_serial_number())
             .not_valid_before(not_before).not_valid_after(not_after)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                            critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 ca.key.public_key()), critical=False))
        if ca_pathlen is not None:
            b = (b.add_extension(x509.BasicConstraints(ca=True, path_length=ca_pathlen),
                                 critical=True)
                 .add_extension(self._ca_usage(), critical=True))
        else:
            b = (b.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                 critical=True)
                 .add_extension(self._leaf_usage(), critical=True))
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        cert = b.sign(ca.key, hashes.SHA256())
        return Issued(cert, None, [ca.cert, *ca.chain])

    # -- public API ----------------------------------------------------------
    def sign_csr(self, csr: bytes | x509.CertificateSigningRequest, cn: Optional[str] = None,
                 not_before: Optional[dt.datetime] = None,
                 not_after: Optional[dt.datetime] = None,
                 ca: Optional[Issued] = None) -> Issued:
        """Device cert (CA:FALSE, digitalSignature, clientAuth) for a CSR.

        cn overrides the CSR's CN (e.g. to make a CN != gateway.id); pass
        not_after in the past for an expired cert (see `expired_window`).
        The key stays wherever the CSR's key is (usually the token).
        """
        if isinstance(csr, (bytes, str)):
            csr = x509.load_pem_x509_csr(csr if isinstance(csr, bytes) else csr.encode())
        if not csr.is_signature_valid:
            raise ValueError("CSR signature invalid")
        if cn is None:
            cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return self._issue(ca or self.intermediate, _name(cn), csr.public_key(),
                           eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
                           not_before=not_before, not_after=not_after)

    @staticmethod
    def expired_window(days_ago: int = 1) -> dict:
        """kwargs for sign_csr/client_cert giving a cert that expired `days_ago`."""
        now = _now()
        return {"not_before": now - dt.timedelta(days=30),
                "not_after": now - dt.timedelta(days=days_ago)}

    def server_cert(self, cn: str = "localhost", ips: Iterable[str] = ("127.0.0.1",),
                    dns: Iterable[str] = ("localhost",), ca: Optional[Issued] = None,
                    **validity) -> Issued:
        """Broker cert (serverAuth) with a file key. For a name mismatch use
        e.g. server_cert(cn="wrong.example", ips=(), dns=("wrong.example",))."""
        key = new_key()
        san = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        san += [x509.DNSName(d) for d in dns]
        issued = self._issue(ca or self.intermediate, _name(cn), key.public_key(),
                             eku=[ExtendedKeyUsageOID.SERVER_AUTH], san=san or None,
                             **validity)
        issued.key = key
        return issued

    def client_cert(self, cn: str = "observer", ca: Optional[Issued] = None,
                    **validity) -> Issued:
        """Client cert (clientAuth) with a file key, e.g. the test observer."""
        key = new_key()
        issued = self._issue(ca or self.intermediate, _name(cn), key.public_key(),
                             eku=[ExtendedKeyUsageOID.CLIENT_AUTH], **validity)
        issued.key = key
        return issued
