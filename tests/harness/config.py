"""Write edgebridged INI configs (main file + conf.d drop-ins) and find the
line numbers of keys so tests can check "FILE:LINE: message"."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

Sections = Mapping[str, Optional[Mapping[str, Any]]]


def _section_name(kwarg: str) -> str:
    # python kwargs can't contain '.': sensor__boiler -> sensor.boiler
    return kwarg.replace("__", ".")


def render_ini(sections: Sections) -> str:
    """[name] blocks in the given order; a value None omits the key,
    a section None omits the section."""
    out = []
    for name, keys in sections.items():
        if keys is None:
            continue
        if out:
            out.append("")
        out.append(f"[{name}]")
        for k, v in keys.items():
            if v is None:
                continue
            if isinstance(v, bool):
                v = "true" if v else "false"
            out.append(f"{k} = {v}")
    return "\n".join(out) + "\n"


def merge_sections(base: Sections, overrides: Sections) -> Dict[str, Optional[dict]]:
    """Key-wise merge: overrides[sec] = None drops the section; a key whose
    value is None is dropped; new sections are appended."""
    merged: Dict[str, Optional[dict]] = {k: (dict(v) if v is not None else None)
                                         for k, v in base.items()}
    for sec, keys in overrides.items():
        if keys is None:
            merged[sec] = None
        elif merged.get(sec) is None:
            merged[sec] = dict(keys)
        else:
            merged[sec].update(keys)
    return merged


class ConfigFile:
    """A config file on disk (main file or drop-in)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def conf_d(self) -> Path:
        return self.path.parent / "conf.d"

    def line_of(self, key: str, section: Optional[str] = None) -> int:
        """1-based line number of `key = ...` (within [section] if given), or of
        the header "[section]" when key is None-ish ("")."""
        current = None
        for n, raw in enumerate(self.text.splitlines(), 1):
            line = raw.strip()
            m = re.match(r"^\[([^\]]+)\]", line)
            if m:
                current = m.group(1).strip()
                if not key and current == section:
                    return n
                continue
            if key and re.match(rf"^{re.escape(key)}\s*=", line) and \
                    (section is None or current == section):
                return n
        raise KeyError(f"{section}.{key} not in {self.path}")

    def add_dropin(self, name: str, sections: Optional[Sections] = None,
                   text: Optional[str] = None, **kw) -> "ConfigFile":
        """Write conf.d/<name> beside this file (sections, raw text or kwargs)."""
        return write_config(self.conf_d / name, sections, text=text, **kw)


def write_config(path: Path | str, sections: Optional[Sections] = None, *,
                 text: Optional[str] = None, **kw: Optional[Mapping[str, Any]]) -> ConfigFile:
    """Write an INI file and return it as ConfigFile.

    write_config(p, gateway={"id": "gw-1"}, sensor__boiler={"driver": "sim"})
    write_config(p, {"sensor.boiler": {...}})
    write_config(p, text="[gateway]\\nid = x\\n")   # raw text
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if text is None:
        all_sections: Dict[str, Any] = dict(sections or {})
        all_sections.update({_section_name(k): v for k, v in kw.items()})
        text = render_ini(all_sections)
    path.write_text(text)
    return ConfigFile(path)
