"""Where the tests read the shared reference data in place (MindFormers configs, CRDs); never copied here.

`../shared/reference` beside the checkout, as CI lays it out; for a clone elsewhere, this workspace's
/work/shared/reference; ASCEND_RUN_REFERENCE overrides both.
"""

from __future__ import annotations

import os
from pathlib import Path

_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "reference", Path("/work/shared/reference")]

REFERENCE = Path(os.environ["ASCEND_RUN_REFERENCE"]) if os.environ.get("ASCEND_RUN_REFERENCE") else next(
    (c for c in _CANDIDATES if c.is_dir()), _CANDIDATES[0])
