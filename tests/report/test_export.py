"""``aldctl runs export``: what is exported and read back equals the journal, in every
format; the JSON re-creates the run (recipe text and tool configuration)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from aldctl.front.export import TABLES, journal_tables, read_export
from tests.conftest import CliResult

MakeRun = Callable[[str], tuple[Path, str]]


@pytest.mark.parametrize("kind", ["held-and-resumed", "crash-resumed"])
def test_every_format_round_trips_to_the_journal(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path, kind: str
) -> None:
    data, run_id = make_run(kind)
    con = sqlite3.connect(data / "journal.sqlite")
    expected = journal_tables(con, run_id)
    con.close()
    assert all(expected[t] for t in TABLES)  # every table has rows to compare
    for fmt in ("csv", "json", "parquet"):
        out = tmp_path / fmt
        res = run_cli(
            "runs", "export", run_id, "--format", fmt, "--data-dir", str(data), "--out", str(out)
        )
        assert res.code == 0, res.err
        path = out / f"{run_id}.json" if fmt == "json" else out / run_id
        assert read_export(path) == expected, fmt


def test_the_json_export_re_creates_the_run(
    make_run: MakeRun, run_cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    data, run_id = make_run("completed")
    res = run_cli(
        "runs",
        "export",
        run_id,
        "--format",
        "json",
        "--data-dir",
        str(data),
        "--out",
        str(tmp_path),
    )
    assert res.code == 0, res.err
    doc = json.loads((tmp_path / f"{run_id}.json").read_text())
    assert doc["schema"] == 1
    run = doc["run"]
    assert run["outcome"] == "complete"
    assert run["overrides"] == {"cycles": 24}
    # Re-create: the recipe text and the tool config from the export alone, in a new place.
    recipe = tmp_path / "again" / "recipe.yaml"
    recipe.parent.mkdir()
    recipe.write_text(run["recipe_text"])
    config = tmp_path / "again" / "tool.yaml"
    config.write_text(yaml.safe_dump(doc["tool_config"]))
    again = run_cli(
        "run",
        str(recipe),
        "--config",
        str(config),
        "--data-dir",
        str(tmp_path / "d2"),
        "--json",
        *(a for k, v in run["overrides"].items() for a in ("--set", f"{k}={v}")),
    )
    assert again.code == 0, again.err
    summary = json.loads(again.out)
    assert summary["cycles_completed"] == 24
    assert summary["thickness_nm"] == pytest.approx(
        run["summary"]["simulation"]["thickness_nm"], rel=0.02
    )


def test_parquet_without_pyarrow_is_one_error_line(
    make_run: MakeRun,
    run_cli: Callable[..., CliResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    data, run_id = make_run("completed")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    res = run_cli(
        "runs",
        "export",
        run_id,
        "--format",
        "parquet",
        "--data-dir",
        str(data),
        "--out",
        str(tmp_path),
    )
    assert res.code == 2
    assert "pip install 'aldctl[parquet]'" in res.err.splitlines()[0]
