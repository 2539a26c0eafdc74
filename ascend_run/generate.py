"""Committed generated files (`images/`, `charts/`): what they must contain, and writing them.

`expected_files()` is the single answer to "what should be in the repo"; `make generate` writes it and
`tests/test_generated.py` fails when the committed files drift from it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# Each entry: (module, function) returning {path relative to the repo root: content}.
GENERATORS: list[tuple[str, str]] = [
    ("ascend_run.generate", "image_files"),
    ("ascend_run.charts", "chart_files"),
]


def image_files() -> dict[str, str]:
    from ascend_run.inputs.images import IMAGE_KINDS
    from ascend_run.render.dockerfile import render_build_context

    return {f"images/{kind}/{name}": text
            for kind in IMAGE_KINDS for name, text in render_build_context(kind).items()}


def expected_files() -> dict[str, str]:
    files: dict[str, str] = {}
    for module, func in GENERATORS:
        files.update(getattr(importlib.import_module(module), func)())
    return files


def generated_roots() -> set[str]:
    """Top-level folders the generators own, e.g. {'images/train', 'charts/ascend-train'}."""
    return {"/".join(path.split("/")[:2]) for path in expected_files()}


def write_all(root: Path) -> list[str]:
    """Write every generated file under `root`; remove stale files in the generated folders."""
    files = expected_files()
    changed = []
    for folder in generated_roots():
        for old in (root / folder).rglob("*"):
            rel = old.relative_to(root).as_posix()
            if old.is_file() and rel not in files:
                old.unlink()
                changed.append(rel)
    for rel, text in sorted(files.items()):
        target = root / rel
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            changed.append(rel)
    return changed


if __name__ == "__main__":
    import sys

    changed = write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
    print("\n".join(f"wrote {c}" for c in changed) or "generated files are up to date")
