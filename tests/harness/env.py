"""Env: token + on-token key + CSR + PKI + broker + config in one temp dir,
so an integration test is a few lines. Everything it starts, close() stops."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from . import expect
from .broker import Broker, Observer
from .c8y import C8yCloud
from .tb import TbCloud
from .config import ConfigFile, merge_sections, write_config
from .daemon import Daemon, run_edgebridged
from .pki import Issued, Pki
from .token import DEFAULT_PIN, Token, make_csr_on_token
from .util import HarnessError

DEFAULT_GATEWAY_ID = "gw-0001"
DEFAULT_GATEWAY_NAME = "Test gateway"

# two simulated sensors, fast enough for quick tests
DEFAULT_SENSORS: Dict[str, Dict[str, Any]] = {
    "sensor.boiler": {"driver": "sim", "interval": "500ms", "fragment": "c8y_Temperature",
                      "series": "T", "unit": "C", "waveform": "sine", "min": 20,
                      "max": 80, "period": "60s", "seed": 1},
    "sensor.pressure": {"driver": "sim", "interval": "500ms", "fragment": "c8y_Pressure",
                        "series": "P", "unit": "bar", "waveform": "random-walk",
                        "min": 1, "max": 3, "seed": 2},
}


class Env:
    """One complete, isolated setup under `dir`.

    env = Env(tmp_path)                 # token, key, CSR, device cert, broker (stopped)
    env.start_broker(); obs = env.observer()
    d = env.daemon()                    # writes env.config_file and starts edgebridged
    ...
    env.close()                         # stops daemon(s), observers, broker

    pki: share one (e.g. session-scoped) Pki between Envs for speed.
    server: the broker's server cert (default: pki.server_cert() for 127.0.0.1).
    broker_kw: more Broker(...) arguments (host=, port=, netns=, durable=).
    cloud: None (plain broker), "c8y" or "tb": env.broker is then the broker
    of a harness.c8y.C8yCloud (Cumulocity MQTT emulator plugin), kept as
    env.c8y, or of a harness.tb.TbCloud (ThingsBoard), kept as env.tb, and
    the config's [cloud] profile says thingsboard;
    cloud_kw: more C8yCloud(...)/TbCloud(...) arguments (jwt_lifetime=,
    max_payload=, ...; for "tb" also tb_mode="device"|"chain").
    """

    def __init__(self, dir: Path | str, pki: Optional[Pki] = None, *,
                 gateway_id: str = DEFAULT_GATEWAY_ID, pin: str = DEFAULT_PIN,
                 server: Optional[Issued] = None,
                 broker_kw: Optional[Mapping[str, Any]] = None,
                 cloud: Optional[str] = None,
                 cloud_kw: Optional[Mapping[str, Any]] = None):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.gateway_id = gateway_id
        self.pin = pin
        self._daemons: List[Daemon] = []
        self._observers: List[Observer] = []
        self.token = Token(self.dir / "token").init(pin=pin).gen_ec_key()
        self.pki = pki or Pki(self.dir / "pki")
        self.csr = make_csr_on_token(self.token, gateway_id)
        self.device = self.pki.sign_csr(self.csr)
        self.cert_file = self.device.write_chain(self.dir / "device-chain.pem", "full")
        self.pin_file = self.token.write_pin_file(self.dir / "pin", pin)
        self.c8y: Optional[C8yCloud] = None
        self.tb: Optional[TbCloud] = None
        self.profile = "thingsboard" if cloud == "tb" else "cumulocity"
        if cloud == "tb":
            # tb_mode "device": this device's certificate is registered;
            # "chain": the CA that issued it is registered on a device
            # profile (the device is created from the CN)
            kw = dict(cloud_kw or {})
            mode = kw.pop("tb_mode", "device")
            if mode == "device":
                kw.setdefault("device_certs", [self.device.write_cert(self.dir / "device.pem")])
            elif mode == "chain":
                kw.setdefault("profile_cas", [self.pki.intermediate_file])
            else:
                raise HarnessError(f"unknown tb_mode {mode!r} (device or chain)")
            self.tb = TbCloud(self.dir / "broker", self.pki, server=server,
                              **kw, **dict(broker_kw or {}))
            self.broker = self.tb.broker
        elif cloud == "c8y":
            self.c8y = C8yCloud(self.dir / "broker", self.pki, server=server,
                                **dict(cloud_kw or {}), **dict(broker_kw or {}))
            self.broker = self.c8y.broker
        elif cloud is None:
            self.broker = Broker(self.dir / "broker", self.pki, server=server,
                                 **dict(broker_kw or {}))
        else:
            raise HarnessError(f"unknown cloud {cloud!r} (None, \"c8y\" or \"tb\")")
        self.state_dir = self.dir / "state"
        self.state_dir.mkdir(exist_ok=True)
        self.config_file: Optional[ConfigFile] = None

    # -- identities ----------------------------------------------------------
    def issue_device_chain(self, name: str, cn: Optional[str] = None,
                           variant: str = "full", **validity) -> Path:
        """Another cert for the token key (e.g. other CN, expired) written as a
        chain file `name` in the env dir; pass it as cloud.cert_file."""
        issued = self.pki.sign_csr(self.csr, cn=cn, **validity)
        return issued.write_chain(self.dir / name, variant)

    def write_pin(self, name: str, pin: str, mode: int = 0o600) -> Path:
        return self.token.write_pin_file(self.dir / name, pin, mode=mode)

    # -- config --------------------------------------------------------------
    def base_sections(self, sensors: Optional[Mapping[str, Mapping]] = None
                      ) -> Dict[str, Optional[dict]]:
        sections: Dict[str, Optional[dict]] = {
            "gateway": {"id": self.gateway_id, "name": DEFAULT_GATEWAY_NAME,
                        "state_dir": self.state_dir, "log_level": "info"},
            "hsm": {"module": self.token.module, "key": self.token.uri,
                    "pin_file": self.pin_file},
            "cloud": {"profile": self.profile, "host": self.broker.host,
                      "port": self.broker.port, "ca_file": self.broker.server_ca_file,
                      "cert_file": self.cert_file, "keepalive": "60s"},
        }
        for name, keys in (DEFAULT_SENSORS if sensors is None else sensors).items():
            sections[name] = dict(keys)
        return sections

    def write_config(self, path: Optional[Path] = None,
                     sensors: Optional[Mapping[str, Mapping]] = None,
                     **overrides: Optional[Mapping[str, Any]]) -> ConfigFile:
        """Write a valid config (plus overrides) and make it env.config_file.

        Overrides merge key-wise: env.write_config(hsm={"pin_file": p}),
        sensor__boiler={"interval": "1s"}; a value None removes the key, a
        section None removes the section.
        """
        sections = merge_sections(self.base_sections(sensors),
                                  {k.replace("__", "."): v for k, v in overrides.items()})
        self.config_file = write_config(path or self.dir / "edgebridge.conf", sections)
        return self.config_file

    def use_pkcs11_spy(self, output: Optional[Path] = None) -> Dict[str, str]:
        """Env vars that make hsm.module = PKCS11_SPY_MODULE log to `output`."""
        return self.token.spy_env(output or self.dir / "pkcs11-spy.log")

    # -- processes -----------------------------------------------------------
    def start_broker(self) -> Broker:
        return self.broker.start()

    def observer(self, **kw) -> Observer:
        """Started observer subscribed to s/us (closed by close())."""
        obs = Observer(self.broker, **kw)
        self._observers.append(obs)
        return obs.start()

    def daemon_env(self, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        return {**self.token.env, **(extra or {})}

    def daemon(self, config: Optional[Path | ConfigFile] = None,
               env: Optional[Mapping[str, str]] = None, start: bool = True) -> Daemon:
        """edgebridged on `config` (default: env.config_file, written if needed)."""
        if config is None:
            config = self.config_file or self.write_config()
        d = Daemon(Path(config), env=self.daemon_env(env),
                   out_file=self.dir / f"edgebridged-{len(self._daemons)}.out")
        self._daemons.append(d)
        return d.start() if start else d

    def check_config(self, config: Optional[Path | ConfigFile] = None,
                     env: Optional[Mapping[str, str]] = None,
                     timeout: float = 30) -> subprocess.CompletedProcess:
        if config is None:
            config = self.config_file or self.write_config()
        return run_edgebridged(["-c", Path(config), "--check-config"],
                               env=self.daemon_env(env), timeout=timeout)

    def connected_re(self):
        return expect.log_re("connected", host=self.broker.host, port=self.broker.port)

    def close(self) -> None:
        errors = []
        for d in self._daemons:
            try:
                d.stop()
            except Exception as e:  # keep going: everything must be stopped
                errors.append(e)
        for o in self._observers:
            try:
                o.stop()
            except Exception as e:
                errors.append(e)
        try:
            self.broker.stop()
        except Exception as e:
            errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> "Env":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
