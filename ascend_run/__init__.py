"""ascend-run: one tool for training and serving DeepSeek-V3 with MindSpore on Ascend servers."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def shipped(name: str) -> Path | None:
    """A directory the kit ships beside its code (`templates`, `examples/cpu-job`), or None: inside the
    installed package, where the wheel puts it (force-included from the checkout, see pyproject.toml), else
    at the top of the source checkout. One copy in the repository; the wheel's is made at build time."""
    from importlib import resources

    installed = resources.files("ascend_run").joinpath(name)
    if installed.is_dir():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parents[1] / name
    return checkout if checkout.is_dir() else None


def require_shipped(name: str, error: type[Exception] | None = None) -> Path:
    """`shipped(name)`, or `error` (an AscendRunError type) saying the installation is incomplete."""
    found = shipped(name)
    if found is None:
        from ascend_run.errors import AscendRunError

        raise (error or AscendRunError)(f"{name} is missing from this installation (neither "
                                        f"ascend_run/{name} nor ./{name} beside the package)",
                                        fix="reinstall ascend-run with `pip install .` from a full checkout")
    return found
