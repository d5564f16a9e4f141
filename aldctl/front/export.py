"""``aldctl runs export``: every table of a run, in CSV, JSON or Parquet.

Tables (the README documents the columns): ``run`` (one row: the runs table without its
binary simulator snapshots), ``events``, ``checkpoints``, ``pulses``, ``samples``. Times
``t``, ``t_start``, ``t_end`` and the pulse times are process seconds from the run's start
(earlier sessions of a resumed run included).

* CSV: a directory ``RUN_ID/`` with one file per table and ``run.json`` (the run row, its
  recipe text and tool configuration, which do not fit a CSV cell readably);
* JSON: one file ``RUN_ID.json``: ``{"schema", "run", "tool_config", "tables": {...}}``;
* Parquet (``pip install 'aldctl[parquet]'``): a directory with one file per table.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aldctl.diagnostics import UserError
from aldctl.engine.journal import Journal

EXPORT_SCHEMA = 1

TABLES: dict[str, tuple[str, ...]] = {
    "events": ("seq", "t", "wall", "kind", "state", "message", "data"),
    "checkpoints": ("unit", "label", "rep", "position", "t_start", "t_end", "session"),
    "pulses": (
        "unit",
        "line",
        "chemical",
        "commanded_open",
        "achieved_open",
        "commanded_close",
        "achieved_close",
        "hardware",
        "area_torr_s",
    ),
    "samples": ("t", "channel", "value"),
}
ORDER = {"events": "seq", "checkpoints": "unit", "pulses": "rowid", "samples": "rowid"}
RUN_SKIP = ("sim_state", "final_state", "owner_token", "pid_start", "lease_until")
"""Binary simulator snapshots and the ownership lease: not the run's record."""


@dataclass
class RunTables:
    run: dict[str, Any]
    tables: dict[str, list[tuple[Any, ...]]]
    tool_config: dict[str, Any] | str | None


def read_run(journal: Journal, run_id: str) -> RunTables:
    full = journal.resolve(run_id)
    db = journal.db
    cur = db.execute("SELECT * FROM runs WHERE id=?", (full,))
    names = [d[0] for d in cur.description]
    row = cur.fetchone()
    run = {k: v for k, v in zip(names, row, strict=True) if k not in RUN_SKIP}
    rec = journal.get(full)  # outcome as the journal judges it (a dead owner: failed)
    run["outcome"], run["reason"] = rec.outcome, rec.reason
    tables = {
        name: db.execute(
            f"SELECT {', '.join(cols)} FROM {name} WHERE run_id=? ORDER BY {ORDER[name]}",
            (full,),
        ).fetchall()
        for name, cols in TABLES.items()
    }
    return RunTables(run, tables, tool_config(run))


def tool_config(run: dict[str, Any]) -> dict[str, Any] | str | None:
    """The tool configuration the run used: its YAML text when it came from a file, else
    the built-in simulated tool as provisioned for the recipe (when the recipe is still
    there to provision it from)."""
    if run.get("config_text"):
        return str(run["config_text"])
    from aldctl.session import prepare

    try:
        p = prepare(Path(run["recipe_path"]), None, overrides=json.loads(run["overrides"]))
    except Exception:
        return None
    from aldctl.config import plain_for_display

    return dict(plain_for_display(p.tool))


def export(journal: Journal, run_id: str, fmt: str, out: Path) -> list[Path]:
    data = read_run(journal, run_id)
    rid = data.run["id"]
    if fmt == "json":
        return [_json(data, out / f"{rid}.json")]
    d = out / rid
    d.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        return _csv(data, d)
    if fmt == "parquet":
        return _parquet(data, d)
    raise UserError(f"unknown export format '{fmt}' (expected csv, json or parquet)")


def _meta(data: RunTables) -> dict[str, Any]:
    run = dict(data.run)
    for k in ("includes", "overrides", "params", "summary"):
        if isinstance(run.get(k), str):
            run[k] = json.loads(run[k])
    return {"schema": EXPORT_SCHEMA, "run": run, "tool_config": data.tool_config}


def _json(data: RunTables, path: Path) -> Path:
    doc = _meta(data)
    doc["tables"] = {
        name: [dict(zip(TABLES[name], r, strict=True)) for r in rows]
        for name, rows in data.tables.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(doc, indent=1, default=str), encoding="utf-8")
    tmp.replace(path)
    return path


def _csv(data: RunTables, d: Path) -> list[Path]:
    paths = []
    meta = d / "run.json"
    meta.write_text(json.dumps(_meta(data), indent=1, default=str), encoding="utf-8")
    paths.append(meta)
    for name, rows in data.tables.items():
        p = d / f"{name}.csv"
        with p.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(TABLES[name])
            w.writerows(rows)
        paths.append(p)
    return paths


def _parquet(data: RunTables, d: Path) -> list[Path]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(
            "Parquet export needs pyarrow (hint: pip install 'aldctl[parquet]')"
        ) from None
    paths = []
    meta = d / "run.json"
    meta.write_text(json.dumps(_meta(data), indent=1, default=str), encoding="utf-8")
    paths.append(meta)
    for name, rows in data.tables.items():
        cols = TABLES[name]
        table = pa.table(
            {c: [r[i] for r in rows] for i, c in enumerate(cols)}, schema=_schema(name)
        )
        p = d / f"{name}.parquet"
        pq.write_table(table, p)
        paths.append(p)
    return paths


_TYPES = {
    "seq": "int64",
    "unit": "int64",
    "rep": "int64",
    "position": "int64",
    "session": "int64",
    "hardware": "int64",
    "t": "float64",
    "t_start": "float64",
    "t_end": "float64",
    "commanded_open": "float64",
    "achieved_open": "float64",
    "commanded_close": "float64",
    "achieved_close": "float64",
    "area_torr_s": "float64",
    "value": "float64",
}


def _schema(name: str) -> Any:
    import pyarrow as pa

    return pa.schema([(c, pa.type_for_alias(_TYPES.get(c, "string"))) for c in TABLES[name]])


# ---------------------------------------------------------------------- reading back


def read_export(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The tables of an export, as tuples in the journal's column order (tests and users
    check a round trip with it)."""
    if path.suffix == ".json":
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {
            n: [tuple(r[c] for c in TABLES[n]) for r in rows] for n, rows in doc["tables"].items()
        }
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, cols in TABLES.items():
        pq_path, csv_path = path / f"{name}.parquet", path / f"{name}.csv"
        if pq_path.exists():
            import pyarrow.parquet as pq

            t = pq.read_table(pq_path).to_pydict()
            out[name] = list(zip(*(t[c] for c in cols), strict=True))
        else:
            with csv_path.open(newline="", encoding="utf-8") as f:
                r = csv.reader(f)
                next(r)
                out[name] = [_typed(cols, row) for row in r]
    return out


def _typed(cols: Sequence[str], row: Sequence[str]) -> tuple[Any, ...]:
    vals: list[Any] = []
    for c, v in zip(cols, row, strict=True):
        kind = _TYPES.get(c, "string")
        if v == "" and c not in ("wall", "message", "channel", "line", "chemical", "label", "kind"):
            vals.append(None)
        elif kind == "int64":
            vals.append(int(v))
        elif kind == "float64":
            vals.append(float(v))
        else:
            vals.append(v)
    return tuple(vals)


def journal_tables(db: sqlite3.Connection, run_id: str) -> dict[str, list[tuple[Any, ...]]]:
    return {
        name: db.execute(
            f"SELECT {', '.join(cols)} FROM {name} WHERE run_id=? ORDER BY {ORDER[name]}",
            (run_id,),
        ).fetchall()
        for name, cols in TABLES.items()
    }
