"""Shared fixtures: the reference vectors in ../shared/rtd_reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("LRTD_REFERENCE_DIR", REPO.parent / "shared" / "rtd_reference"))


def load_reference():
    """(cases, arrays) of the authors' reference values, or skip with a clear message."""
    cases_file = REFERENCE_DIR / "cases.json"
    if not cases_file.exists():
        pytest.skip(
            f"RTD reference vectors not found at {REFERENCE_DIR} (expected ../shared/rtd_reference "
            "beside the repository, or set LRTD_REFERENCE_DIR)"
        )
    cases = json.loads(cases_file.read_text())["cases"]
    arrays = np.load(REFERENCE_DIR / "cases.npz")
    return cases, arrays


def reference_case_names() -> list[tuple[str, bool]]:
    """(name, slow) of every reference case, readable at collection time (empty if absent)."""
    cases_file = REFERENCE_DIR / "cases.json"
    if not cases_file.exists():
        return [("<reference data absent>", False)]
    return [(c["name"], bool(c.get("slow"))) for c in json.loads(cases_file.read_text())["cases"]]
