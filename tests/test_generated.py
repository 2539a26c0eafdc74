"""Committed generated files (images/, charts/) must equal what the generators produce."""

from pathlib import Path

from ascend_run.generate import expected_files, generated_roots

ROOT = Path(__file__).resolve().parents[1]


def test_committed_generated_files_match_generators():
    expected = expected_files()
    drifted = [rel for rel, text in expected.items()
               if not (ROOT / rel).is_file() or (ROOT / rel).read_text(encoding="utf-8") != text]
    assert not drifted, f"out of date (run `make generate`): {drifted}"


def test_no_stale_files_in_generated_folders():
    expected = set(expected_files())
    stale = [p.relative_to(ROOT).as_posix() for folder in generated_roots() for p in (ROOT / folder).rglob("*")
             if p.is_file() and p.relative_to(ROOT).as_posix() not in expected]
    assert not stale, f"files no generator makes (run `make generate`): {stale}"
