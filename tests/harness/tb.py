"""TbCloud: the Broker with the ThingsBoard MQTT device API emulator plugin
(tests/cloud/tb_plugin.c, built as build/tests/tb_plugin.so).

The plugin authenticates devices by their X.509 certificate the way
ThingsBoard does (a certificate registered for the device, or a CA
registered on a device profile: the device is then created from the CN),
allows only the v1/devices/me/* device API, enforces the payload limit that
getSessionLimits reports, validates telemetry JSON and records everything as
JSON lines. Tests drive it as an admin client (CN "tbadmin"): shared
attribute updates, server-side RPCs, run-time settings.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .broker import Broker
from .c8y import admin_publish, read_records
from .pki import Pki
from .util import REPO_ROOT, HarnessError, wait_until

PLUGIN = Path(os.environ.get("TB_PLUGIN") or REPO_ROOT / "build" / "tests" / "tb_plugin.so")

ADMIN_CN = "tbadmin"


class TbCloud:
    """mosquitto + the ThingsBoard emulator plugin, under `dir`.

    cloud = TbCloud(tmp_path / "tb", pki, device_certs=[leaf_pem]).start()
    cloud.wait_telemetry("gw-0001", lambda o: "boiler.T" in o["values"])
    cloud.rpc("gw-0001", 5, {"method": "setGpio", "params": {...}})
    cloud.wait_rpc_response("gw-0001", 5)

    device_certs: PEM files of certificates registered for devices
    ("X.509 certificate" credentials); profile_cas: PEM files of CAs
    registered on a device profile (the "X.509 certificate chain"
    provisioning of ThingsBoard >= 3.5). max_payload: the session limit
    (bytes of payload); reported_max_payload: what getSessionLimits says
    instead (benchmarks). broker_kw: more Broker(...) arguments.
    """

    def __init__(self, dir: Path | str, pki: Pki, *,
                 device_certs: Sequence[Path | str] = (),
                 profile_cas: Sequence[Path | str] = (),
                 max_payload: int = 65536, reported_max_payload: Optional[int] = None,
                 admins: Sequence[str] = ("observer",),
                 **broker_kw: Any):
        if not PLUGIN.is_file():
            raise HarnessError(f"the ThingsBoard emulator plugin {PLUGIN} is missing: "
                               "run `make build/tests/tb_plugin.so` first")
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.record_file = self.dir / "tb-record.jsonl"
        conf = ["use_identity_as_username false", f"plugin {PLUGIN}",
                f"plugin_opt_record_file {self.record_file}",
                f"plugin_opt_admin {','.join(dict.fromkeys([*admins, ADMIN_CN]))}",
                f"plugin_opt_max_payload {int(max_payload)}"]
        if reported_max_payload:
            conf.append(f"plugin_opt_reported_max_payload {int(reported_max_payload)}")
        for name, files in (("device_certs", device_certs), ("profile_cas", profile_cas)):
            if files:
                bundle = self.dir / f"{name}.pem"
                bundle.write_bytes(b"".join(Path(f).read_bytes() for f in files))
                conf.append(f"plugin_opt_{name} {bundle}")
        extra = list(broker_kw.pop("extra_conf", ()))
        self.broker = Broker(self.dir, pki, extra_conf=[*conf, *extra], **broker_kw)
        cert = pki.client_cert(ADMIN_CN)
        d = self.dir / f"client-{ADMIN_CN}"
        self._admin_chain = cert.write_chain(d / "chain.pem", "leaf+intermediate")
        self._admin_key = cert.write_key(d / "key.pem")
        self._n = 0
        self._lock = threading.Lock()

    def start(self, timeout: float = 10) -> "TbCloud":
        self.broker.start(timeout)
        return self

    def stop(self, timeout: float = 10) -> Optional[int]:
        return self.broker.stop(timeout)

    # -- the record ----------------------------------------------------------
    def records(self, ev: Optional[str] = None,
                device: Optional[str] = None) -> List[Dict[str, Any]]:
        return read_records(self.record_file, ev, device)

    def telemetry(self, device: str) -> List[Dict[str, Any]]:
        """Every accepted telemetry object of `device`, arrays flattened:
        {"ts": ..., "values": {...}} (flat objects as {"values": {...}})."""
        out = []
        for r in self.records("telemetry", device):
            data = r["data"]
            for o in data if isinstance(data, list) else [data]:
                out.append(o if "values" in o else {"values": o})
        return out

    def wait_telemetry(self, device: str, pred: Callable[[Dict[str, Any]], bool] = lambda o: True,
                       n: int = 1, timeout: float = 15) -> List[Dict[str, Any]]:
        def got():
            hits = [o for o in self.telemetry(device) if pred(o)]
            return hits if len(hits) >= n else None
        return wait_until(got, timeout, what=f"{n} telemetry object(s) from {device!r}\n"
                          f"{self._tail()}")

    def wait_record(self, ev: str, device: Optional[str] = None,
                    pred: Callable[[Dict[str, Any]], bool] = lambda r: True,
                    timeout: float = 15) -> Dict[str, Any]:
        def got():
            hits = [r for r in self.records(ev, device) if pred(r)]
            return hits[0] if hits else None
        return wait_until(got, timeout, what=f"a {ev!r} record\n{self._tail()}")

    def wait_rpc_response(self, device: str, rpc_id: int | str,
                          timeout: float = 15) -> Any:
        """The answer of `device` to server-side RPC `rpc_id` (parsed)."""
        r = self.wait_record("rpc_response", device, lambda r: r["id"] == str(rpc_id),
                             timeout)
        return r["data"]

    def _tail(self, k: int = 10) -> str:
        return "\n".join(json.dumps(r) for r in self.records()[-k:])

    # -- control (as admin "tbadmin") ----------------------------------------
    def _admin_publish(self, topic: str, payload: bytes | str) -> None:
        with self._lock:
            self._n += 1
            client_id = f"{ADMIN_CN}-{os.getpid()}-{self._n}"
        admin_publish(self.broker, self._admin_chain, self._admin_key, client_id,
                      topic, payload)

    def set_shared(self, device: str, attrs: Dict[str, Any] | str) -> None:
        """Merge `attrs` into the device's shared attributes and push them
        (a str is sent as it is: malformed JSON for the device's parser)."""
        self._admin_publish(f"tb/{device}/attributes",
                            attrs if isinstance(attrs, str) else json.dumps(attrs))

    def rpc(self, device: str, rpc_id: int, request: Dict[str, Any] | str) -> None:
        """A server-side RPC to `device` (queued until it subscribed)."""
        self._admin_publish(f"tb/{device}/rpc/{int(rpc_id)}",
                            request if isinstance(request, str) else json.dumps(request))

    def control(self, **settings: Any) -> None:
        """max_payload=N, limits=bool (answer getSessionLimits), kick="<device>"."""
        self._admin_publish("tb/control", json.dumps(settings))
