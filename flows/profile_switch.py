"""Switch ``data.profile`` in params.yaml in place, keeping the file's comments and layout.

This is what ``dvc exp run -S data.profile=...`` does to the workspace: the change stays, so a
later ``dvc repro`` sees the same parameters and DVC's staleness checks stay truthful.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from jsqa.config import PROFILES
from jsqa.errors import ConfigError
from jsqa.io import atomic_path

_SECTION = re.compile(r"^data:\s*(#.*)?$")
_PROFILE = re.compile(r"^(?P<indent>[ \t]+)profile:(?P<gap>[ \t]*)(?P<value>[^#\s]+)(?P<rest>.*)$")


def set_profile(params_path: str | Path, profile: str) -> bool:
    """Set ``data.profile`` to ``profile``; return True when the file changed.

    ConfigError when the profile is unknown or the file has no ``data.profile`` line to edit.
    """
    path = Path(params_path)
    if profile not in PROFILES:
        raise ConfigError(f"data.profile: '{profile}' is not one of {', '.join(PROFILES)}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    in_data, indent = False, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if _SECTION.match(line):
            in_data = True
            continue
        if not in_data or not stripped or stripped.startswith("#"):
            continue
        if not line[0].isspace():
            break  # the next top-level key: data.profile was not found
        # Only a direct child of data: (the section's first key sets its indent).
        lead = len(line) - len(line.lstrip(" \t"))
        indent = lead if indent is None else indent
        m = _PROFILE.match(line.rstrip("\r\n"))
        if lead != indent or m is None:
            continue
        if m["value"] == profile:
            return False
        ending = line[len(line.rstrip("\r\n")) :]
        lines[i] = f"{m['indent']}profile:{m['gap']}{profile}{m['rest']}{ending}"
        text = "".join(lines)
        if (yaml.safe_load(text) or {}).get("data", {}).get("profile") != profile:
            raise ConfigError(f"{path}: could not set data.profile safely; edit it by hand")
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return True
    raise ConfigError(f"{path}: no data.profile line to switch")
