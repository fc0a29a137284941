"""Persisting: the results JSON (``results/latest.json`` and dated copies) and reading one
back for ``--render``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from suite.model import Results, from_dict, to_dict


def dump_json(results: Results) -> str:
    """Indented JSON, with each latency histogram on one line (they are long)."""
    compact: dict[str, str] = {}

    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if key == "hist":
                    marker = f"@@hist{len(compact)}@@"
                    compact[marker] = json.dumps(value, separators=(",", ":"))
                    out[key] = marker
                else:
                    out[key] = walk(value)
            return out
        if isinstance(obj, list):
            return [walk(item) for item in obj]
        return obj

    text = json.dumps(walk(to_dict(results)), indent=1, default=str)
    for marker, raw in compact.items():
        text = text.replace(f'"{marker}"', raw)
    return text + "\n"


def prefix_for(*, quick: bool, partial: bool) -> str:
    """``quick-`` / ``partial-`` / nothing: a quick or partial run never overwrites a full one."""
    return "quick-" if quick else "partial-" if partial else ""


def write(results: Results, directory: Path, *, quick: bool, partial: bool) -> list[Path]:
    """``latest.json`` and ``YYYY-MM-DD.json`` (with the run's prefix); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = prefix_for(quick=quick, partial=partial)
    text = dump_json(results)
    day = dt.date.today().isoformat()
    paths = [directory / f"{prefix}latest.json", directory / f"{prefix}{day}.json"]
    for path in paths:
        path.write_text(text, encoding="utf-8")
    return paths


def read(path: Path) -> Results:
    """A results file (of this or an older run)."""
    return from_dict(json.loads(path.read_text(encoding="utf-8")))
