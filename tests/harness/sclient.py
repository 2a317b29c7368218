"""Talk MQTT through `openssl s_client` with the TOKEN key (PKCS#11 engine):
proves a token-held key authenticates against the broker, independently of
edgebridged."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional

from .token import Token
from .util import run


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_connect_packet(client_id: str, keepalive: int = 60) -> bytes:
    var = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", keepalive)
    body = var + _utf8(client_id)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def mqtt_publish_packet(topic: str, payload: bytes) -> bytes:  # QoS 0
    body = _utf8(topic) + payload
    return bytes([0x30]) + _remaining_length(len(body)) + body


MQTT_DISCONNECT = bytes([0xE0, 0x00])


def token_mqtt_publish(token: Token, host: str, port: int, chain_file: Path,
                       ca_file: Path, client_id: str, topic: str, payload: bytes,
                       verify_ip: Optional[str] = "127.0.0.1", timeout: float = 30):
    """CONNECT as `client_id`, PUBLISH `payload` to `topic`, DISCONNECT, using
    `openssl s_client -engine pkcs11 -keyform engine -key <token uri>`.
    Returns the CompletedProcess (stdout holds the CONNACK bytes)."""
    data = (mqtt_connect_packet(client_id) + mqtt_publish_packet(topic, payload)
            + MQTT_DISCONNECT)
    cmd = ["openssl", "s_client", "-connect", f"{host}:{port}", "-quiet", "-ign_eof",
           "-engine", "pkcs11", "-keyform", "engine", "-key", token.uri,
           "-cert", str(chain_file), "-cert_chain", str(chain_file), "-CAfile", str(ca_file), "-verify_return_error"]
    if verify_ip:
        cmd += ["-verify_ip", verify_ip]
    with token.openssl_env() as env:
        return run(cmd, env=env, input=data, timeout=timeout, check=False)
