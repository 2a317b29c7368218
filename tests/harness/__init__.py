"""Integration-test harness for edgebridge.

Pieces (each usable alone):
  Token / make_csr_on_token  SoftHSM2 token in a temp dir, key generated on it,
                             CSR signed by that key through the OpenSSL engine
  Pki / Issued               root -> intermediate -> device/server/client certs
  Broker / Observer          mosquitto with mutual TLS; paho subscriber
  Daemon / run_edgebridged   edgebridged subprocess with captured output
  run_edgebridge             one-shot `edgebridge` (tool) runs
  write_config / ConfigFile  INI writer with line lookup
  Env                        all of the above in one temp dir
  C8yCloud / decode_jwt      Broker + Cumulocity MQTT emulator plugin
  expect                     exit codes and message patterns of the daemon
  C8yRest / mint_jwt         Cumulocity HTTPS REST test cloud (tests/cloud/c8y_rest.py)
  DelayProxy                 TCP forwarder adding latency in each direction
"""

from . import expect
from .broker import Broker, ClientConnection, Line, Observer
from .c8y import C8yCloud, decode_jwt
from .c8y_rest import C8yRest, JwtError, RequestRecord, device_of, mint_jwt, verify_jwt
from .config import ConfigFile, merge_sections, render_ini, write_config
from .delayproxy import DelayProxy
from .daemon import Daemon, DaemonExited, daemon_binary, run_edgebridged
from .env import DEFAULT_GATEWAY_ID, DEFAULT_GATEWAY_NAME, DEFAULT_SENSORS, Env
from .pki import Issued, Pki
from .tool import run_edgebridge, tool_binary
from .token import (DEFAULT_PIN, DEFAULT_SO_PIN, PKCS11_ENGINE, PKCS11_SPY_MODULE,
                    SOFTHSM_MODULE, Token, make_csr_on_token)
from .util import LOOPBACK, REPO_ROOT, HarnessError, free_port, port_open, wait_until

__all__ = [
    "expect", "Broker", "ClientConnection", "Line", "Observer", "C8yCloud", "decode_jwt",
    "ConfigFile",
    "merge_sections", "render_ini", "write_config", "Daemon", "DaemonExited",
    "daemon_binary", "run_edgebridged", "run_edgebridge", "tool_binary",
    "DEFAULT_GATEWAY_ID", "DEFAULT_GATEWAY_NAME",
    "DEFAULT_SENSORS", "Env", "Issued", "Pki", "DEFAULT_PIN", "DEFAULT_SO_PIN",
    "PKCS11_ENGINE", "PKCS11_SPY_MODULE", "SOFTHSM_MODULE", "Token",
    "make_csr_on_token", "LOOPBACK", "REPO_ROOT", "HarnessError", "free_port",
    "port_open", "wait_until",
    "C8yRest", "JwtError", "RequestRecord", "device_of", "mint_jwt", "verify_jwt",
    "DelayProxy",
]
