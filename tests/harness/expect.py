"""Everything the tests expect from edgebridged, in ONE place.

Exit codes, log-message patterns (stderr lines "edgebridged: <level>: <text>")
and the SmartREST lines on s/us. Patterns are case-insensitive regexes and
deliberately tolerant; reconcile them with the daemon's real texts here,
not in the tests.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Optional

# -- exit codes (sysexits.h where one fits) ----------------------------------
EXIT_OK = 0            # clean stop on SIGTERM/SIGINT; --check-config: valid
EXIT_RUNTIME = 1       # runtime failure
EXIT_USAGE = 2         # bad command line
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: PKCS#11 module / token not available
EXIT_NOPERM = 77       # EX_NOPERM: wrong PIN, PIN locked
EXIT_CONFIG = 78       # EX_CONFIG: config, certificate or identity problem at start

# -- daemon log messages ------------------------------------------------------
# Placeholders {host} {port} are filled (regex-escaped) by log_re(); the
# patterns themselves must not use other {...} syntax.
LOG = {
    # one line per log message: "edgebridged: info: ..."
    "line_format": r"^edgebridged: (error|warning|notice|info|debug): ",
    "connected": r"(?<!dis)connected to {host}:{port}",
    "disconnected": r"disconnected|connection (lost|closed|reset)",
    "pin_incorrect": r"PIN (is )?incorrect|incorrect PIN",
    "cn_mismatch": r"does not match gateway\.id",
    # leaf-only cert_file: must say the chain lacks the CA(s)
    "chain_missing_ca": r"chain.*\bCAs?\b|\bCAs?\b.*chain",
    "cert_expired": r"expired",
    # cert_file = root, intermediate, leaf: must say how to order it
    "chain_order": r"order",
    # device cert issued for another key than the token's
    "cert_key_mismatch": r"(not belong|does not match|mismatch).*\bkey\b|\bkey\b.*(not belong|does not match|mismatch)",
    "server_verify_failed": r"certificate verify failed",
    # OpenSSL says "hostname mismatch" or "IP address mismatch" (X509_V_ERR_*)
    "hostname_mismatch": r"hostname mismatch|IP address mismatch|host ?name.*(mismatch|does not match)",
}

# -- --check-config ------------------------------------------------------------
# Every problem one line on stderr: "FILE:LINE: message".
CHECK_LINE = r"^(?P<file>[^\n:]+):(?P<line>\d+): (?P<msg>.+)$"
# A missing required key may name just the file: "FILE: message".
CHECK_LINE_FILE_ONLY = r"^(?P<file>[^\n:]+)(:(?P<line>\d+))?: (?P<msg>.+)$"

# Keywords the message text must contain (besides FILE:LINE).
CHECK = {
    "unknown_section": r"section",
    "unknown_key": r"unknown|not (a )?(known|valid|allowed)|unsupported",
    "bad_duration": r"duration|interval|invalid",
    "bad_value": r"invalid|unknown|bad|must be|expected|not (an?|one of)\b|out of range|not supported|unsupported",
    "missing_key": r"\bid\b",
    "pin_file_mode": r"world|readable|permission|mode",
    "pin_value": r"pin-value",
    "id_colon": r"':'|colon",
}

# -- SmartREST 2.0 lines on s/us ---------------------------------------------
TOPIC_UP = "s/us"
TIME_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
MEASUREMENT_RE = re.compile(
    r"^200,(?P<fragment>[^,]*),(?P<series>[^,]*),(?P<value>[^,]*),(?P<unit>[^,]*),"
    r"(?P<time>" + TIME_RE + r")$")
DEVICE_CREATION_RE = re.compile(r"^100,(?P<name>[^,]*),c8y_EdgeBridge$")   # 100,<name>,<type>
HARDWARE_RE = re.compile(r"^110,(?P<serial>[^,]*),edgebridge,(?P<version>[^,]*)$")
REQUIRED_INTERVAL_RE = re.compile(r"^117,(?P<minutes>\d+)$")


def log_re(name: str, **kw) -> re.Pattern:
    """Compiled (case-insensitive, multiline) pattern LOG[name] with
    placeholders filled in, e.g. log_re("connected", host="127.0.0.1", port=8883)."""
    pat = LOG[name]
    if kw:
        pat = pat.format(**{k: re.escape(str(v)) for k, v in kw.items()})
    return re.compile(pat, re.I | re.M)


def check_re(name: str) -> re.Pattern:
    return re.compile(CHECK[name], re.I)


def parse_time(text: str) -> dt.datetime:
    """ISO-8601 UTC with milliseconds: 2026-11-22T12:00:00.123Z."""
    if not re.fullmatch(TIME_RE, text):
        raise ValueError(f"not an ISO-8601 UTC time with ms: {text!r}")
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.timezone.utc)


class Measurement:
    """A parsed 200 line."""

    def __init__(self, m: re.Match):
        self.fragment = m["fragment"]
        self.series = m["series"]
        self.value = float(m["value"])
        self.unit = m["unit"]
        self.time = parse_time(m["time"])

    def __repr__(self):
        return (f"Measurement({self.fragment},{self.series},{self.value},{self.unit},"
                f"{self.time.isoformat()})")


def parse_measurement(text: str) -> Optional[Measurement]:
    m = MEASUREMENT_RE.match(text)
    return Measurement(m) if m else None


# -- store-and-forward (durable SQLite queue) --------------------------------
# Log lines of the store (tolerant on purpose; reconcile texts here).
LOG.update({
    # "store: cannot write queue.db: database or disk is full" (once per outage)
    "store_cannot_write": r"store: cannot write",
    # the SQLite reason given with it
    "store_disk_full_reason": r"database or disk is full|disk is full|no space left",
    "store_writing_again": r"store: writing again",
    # a silently dead connection noticed (keepalive): any of these words
    "connection_dead": r"disconnected|connection (lost|closed|reset|timed out)|"
                       r"keep-?alive|timed? ?out|no (PINGRESP|answer|response)",
    # a corrupt queue.db found at start and moved aside
    "store_corrupt": r"corrupt",
    # start-up done: signals are handled from here on (a SIGUSR1 before it
    # would kill the daemon)
    "running": r"running as '",
    # the SIGUSR1 counters line: "edgebridged: info: stats: connected; samples: ..."
    "stats_line": r"^edgebridged: \w+: stats: (?P<text>.*)$",
})

# Fields of the stats text. "dropped" may occur more than once (one entry
# per reason, e.g. "0 dropped (queue full), 5 dropped (disk full)"): the
# entries are summed, unless one says "total", which then wins.
STATS_FIELDS = {
    "connected": r"^\s*(connected|not connected)\b",
    "queued_total": r"(\d+) queued in total",
    "acknowledged": r"(\d+) acknowledged",
    "waiting": r"(\d+) waiting",
    "quarantined": r"(\d+) quarantined",
    "in_flight": r"(\d+) in flight",
    "connects": r"(\d+) connects?\b",
}
STATS_DROPPED_RE = re.compile(r"(\d+) dropped(?: (?:samples )?(?:\((?P<reason>[^)]*)\)|(?P<total>in total)))?",
                              re.I)


def parse_stats(text: str) -> dict:
    """The stats text (after "stats: ") as a dict: connected (bool),
    queued_total, acknowledged, waiting, quarantined, in_flight, connects
    (int or None when absent), dropped (int: all reasons), dropped_by_reason
    ({reason: n})."""
    out: dict = {}
    for key, pat in STATS_FIELDS.items():
        m = re.search(pat, text, re.I)
        if key == "connected":
            out[key] = bool(m) and m.group(1).lower() == "connected"
        else:
            out[key] = int(m.group(1)) if m else None
    by_reason: dict = {}
    total = None
    for m in STATS_DROPPED_RE.finditer(text):
        n = int(m.group(1))
        if m.group("total"):
            total = n
            continue
        reason = (m.group("reason") or "").strip().lower()
        by_reason[reason] = by_reason.get(reason, 0) + n
    out["dropped_by_reason"] = by_reason
    out["dropped"] = total if total is not None else sum(by_reason.values())
    out["text"] = text
    return out


# Cumulocity events on s/us: 400,<type>,<text>,<time> (the text quoted when
# needed; the time may be left out).
EVENT_RE = re.compile(
    r'^400,(?P<type>[^,]*),(?P<text>"(?:[^"\\]|\\.)*"|[^,"]*)(?:,(?P<time>' + TIME_RE + r'))?$')
EVENT_SAMPLES_DROPPED = "edgebridge_SamplesDropped"
EVENT_STORE_RESET = "edgebridge_StoreReset"
# text of edgebridge_SamplesDropped:
# "sensor boiler: 1234 samples dropped (store full) between <t0> and <t1>"
DROPPED_TEXT_RE = re.compile(
    r"sensor (?P<sensor>[^\s:]+):?\s+(?P<count>\d+) samples? (?:were )?dropped"
    r"(?:\s*\((?P<reason>[^)]*)\))?", re.I)
DROP_REASONS = ("store full", "too old", "disk full")


class Event:
    """A parsed 400 line."""

    def __init__(self, m: re.Match):
        self.type = m["type"]
        text = m["text"]
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            text = re.sub(r'\\(.)', r'\1', text[1:-1])
        self.text = text
        self.time = parse_time(m["time"]) if m["time"] else None

    def __repr__(self):
        return f"Event({self.type},{self.text!r},{self.time})"


def parse_event(text: str) -> Optional[Event]:
    m = EVENT_RE.match(text)
    return Event(m) if m else None


def parse_dropped(text: str) -> Optional[dict]:
    """{sensor, count, reason} from an edgebridge_SamplesDropped text."""
    m = DROPPED_TEXT_RE.search(text)
    if not m:
        return None
    return {"sensor": m["sensor"], "count": int(m["count"]),
            "reason": (m["reason"] or "").strip().lower()}
