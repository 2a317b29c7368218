"""Harness face of the Cumulocity REST test cloud (tests/cloud/c8y_rest.py).

The implementation lives in tests/cloud so that it can also run as a script;
this module loads it by path (one module object per process, whoever imports
it first) and re-exports its API:

    from harness import C8yRest, mint_jwt, verify_jwt, JwtError
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_MODULE = "edgebridge_test_cloud_c8y_rest"
_PATH = Path(__file__).resolve().parents[1] / "cloud" / "c8y_rest.py"


def _load():
    mod = sys.modules.get(_MODULE)
    if mod is None:
        spec = importlib.util.spec_from_file_location(_MODULE, _PATH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE] = mod  # before exec: dataclasses/NamedTuple look it up
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[_MODULE]
            raise
    return mod


_impl = _load()

C8yRest = _impl.C8yRest
RequestRecord = _impl.RequestRecord
JwtError = _impl.JwtError
mint_jwt = _impl.mint_jwt
verify_jwt = _impl.verify_jwt
device_of = _impl.device_of
ERROR_INFO_URL = _impl.ERROR_INFO_URL
CT_MEASUREMENT = _impl.CT_MEASUREMENT
CT_MEASUREMENT_COLLECTION = _impl.CT_MEASUREMENT_COLLECTION
CT_EXTERNAL_ID = _impl.CT_EXTERNAL_ID
CT_ERROR = _impl.CT_ERROR

__all__ = ["C8yRest", "RequestRecord", "JwtError", "mint_jwt", "verify_jwt", "device_of",
           "ERROR_INFO_URL", "CT_MEASUREMENT", "CT_MEASUREMENT_COLLECTION",
           "CT_EXTERNAL_ID", "CT_ERROR"]
