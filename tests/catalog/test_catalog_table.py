"""The README's catalog table is what ``runner-agent features list --markdown`` prints
today, and every "verified here" claim names a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from agent import cli
from agent.catalog import loading
from agent.cli import catalogtable
from agent.config import paths

ROOT = Path(__file__).resolve().parents[2]
VERIFIED = ROOT / "features" / "verified.yaml"
BLOCK = re.compile(r"<!-- catalog-table:begin -->\n(.*?)<!-- catalog-table:end -->", re.S)


def test_the_readme_table_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["features", "list", "--markdown", "--verified", str(VERIFIED)]) == 0
    printed = capsys.readouterr().out
    found = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert found, "README.md has no catalog-table block"
    assert found.group(1) == printed, (
        "README.md's catalog table is stale: regenerate it with "
        "`runner-agent features list --markdown --verified features/verified.yaml`"
    )


def test_every_feature_has_a_verification_that_names_a_real_test() -> None:
    entries = yaml.safe_load(VERIFIED.read_text(encoding="utf-8"))
    catalog = loading.load([paths.bundled_catalog()])
    assert sorted(entries) == catalog.ids()
    for ident, entry in entries.items():
        for by in entry["by"] if isinstance(entry["by"], list) else [entry["by"]]:
            path, _, name = by.partition("::")
            tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
            tests = {
                n.name
                for n in ast.walk(tree)
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert name in tests, f"{ident}: {by} is not a test"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping of feature ids"),
        ("node: real", "entry 'node': expected"),
        ("node: {how: ''}", "entry 'node': expected"),
        ("node: [", "cannot read it"),
    ],
)
def test_a_bad_verified_file_is_named_and_refused(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "verified.yaml"
    bad.write_text(text)
    with pytest.raises(catalogtable.VerifiedFileError, match=re.escape(message)):
        catalogtable.read_verified(bad)
    assert cli.main(["features", "list", "--markdown", "--verified", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_platform_cells_say_libc_and_any() -> None:
    cell = catalogtable.platforms_cell(
        [
            "linux/x64/glibc",
            "linux/x64/musl",
            "linux/arm64/musl",
            "linux/ppc64",
            "darwin/arm64",
            "windows",
        ]
    )
    assert cell == "linux x64 (+musl) arm64 (musl) ppc64; darwin arm64; windows any"
