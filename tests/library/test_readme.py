"""Every YAML block of the README is something aldctl accepts: recipes validate, tool
configs load and build (a fragment of settings, merged into the built-in tool), chemistry
files load."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aldctl.config import ToolConfig

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = [
    (README[: m.start()].count("\n") + 2, m.group(1))
    for m in re.finditer(r"```yaml\n(.*?)```", README, re.S)
]


def test_the_readme_has_yaml_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize(("line", "text"), BLOCKS, ids=[f"line{ln}" for ln, _ in BLOCKS])
def test_readme_yaml_block_is_valid(
    line: int, text: str, tmp_path: Path, run_cli: Callable[..., Any]
) -> None:
    data = yaml.safe_load(text)
    path = tmp_path / f"readme-line{line}.yaml"
    path.write_text(text)
    if "main" in data:
        res = run_cli("validate", str(path))
    elif "devices" in data:
        res = run_cli("tool", "show", "--config", str(path))
        if res.code == 0:  # every device's driver takes the options the block gives it
            from aldctl import config
            from aldctl.tool import build

            build(config.load_tool(path))
    elif set(data) <= set(ToolConfig.model_fields) | {"for"}:
        # a fragment of a tool config (a few settings): merged into the built-in tool's
        from aldctl import config

        tool = yaml.safe_load(config.builtin_text())
        tool.update(data)
        path.write_text(yaml.safe_dump(tool, sort_keys=False))
        res = run_cli("tool", "show", "--config", str(path))
    elif "chemicals" in data or "processes" in data:
        res = run_cli("--chemistry", str(path), "processes", "--json")
    else:
        pytest.fail(f"README.md:{line}: a YAML block that is no recipe, config or chemistry")
    assert res.code == 0, f"README.md:{line}:\n{res.err}"
