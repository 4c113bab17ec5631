#!/usr/bin/env bash
# Create or update the project's virtual environment in .venv (idempotent).
#
#   bash scripts/setup.sh
#
# 1. creates .venv with `python3 -m venv` if it is missing (override the interpreter with
#    PYTHON=/path/to/python3.x; Python >= 3.10);
# 2. if torch is not importable there, installs torch first: `torch==2.13.0` when /etc/xdg/pip
#    exists (this machine's pip is capped and a CPU wheel of that release lies on disk; without
#    it pip would pull a multi-GB CUDA build), or whatever LRTD_TORCH_SPEC says
#    (e.g. LRTD_TORCH_SPEC="torch==2.9.1"); otherwise the project's own `torch>=2.1` decides;
# 3. upgrades pip when it is older than 25 (old resolvers backtrack for a long time here), then
#    `pip install -e ".[dev]"` (the package, every optional integration and the dev tools).
#
# Step 3 is skipped while .venv/.lrtd-setup-stamp matches a hash of pyproject.toml (and of the
# torch spec), so `make test` after the first run costs well under a second. Delete the stamp,
# or set LRTD_FORCE_SETUP=1, to reinstall.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=".venv"
PY="$VENV/bin/python"
STAMP="$VENV/.lrtd-setup-stamp"
PIP_FLAGS=(-qq --disable-pip-version-check --no-input)

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ ! -x "$PY" ]]; then
    base="${PYTHON:-python3}"
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        log "lightning-rtd needs Python >= 3.10; '$base' is $("$base" --version 2>&1 || echo missing)"
        exit 1
    fi
    log "creating $VENV with $("$base" --version 2>&1)"
    "$base" -m venv "$VENV"
fi

torch_spec="${LRTD_TORCH_SPEC:-}"
if [[ -z "$torch_spec" && -d /etc/xdg/pip ]]; then
    torch_spec="torch==2.13.0"
fi

want="$( { cat pyproject.toml; echo "torch-spec=$torch_spec"; } | sha256sum | cut -d' ' -f1)"
if [[ "${LRTD_FORCE_SETUP:-0}" != "1" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
    && "$PY" -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ("torch", "lightning_rtd", "pytest")))' 2>/dev/null; then
    exit 0  # up to date
fi

# The pip that `python3 -m venv` bundles can be old; an old resolver backtracks through dozens of
# ray releases (gigabytes of downloads) before it settles. A current pip resolves at once.
if ! "$PY" -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) < 25)' 2>/dev/null; then
    log "upgrading pip"
    "$PY" -m pip install "${PIP_FLAGS[@]}" --upgrade "pip>=25"
fi

if ! "$PY" -c 'import torch' >/dev/null 2>&1; then
    if [[ -n "$torch_spec" ]]; then
        log "installing $torch_spec"
        "$PY" -m pip install "${PIP_FLAGS[@]}" "$torch_spec"
    else
        log "torch is not installed; pip will pick a build for torch>=2.1 (set LRTD_TORCH_SPEC to choose)"
    fi
fi

log "installing lightning-rtd[dev] (editable)"
"$PY" -m pip install "${PIP_FLAGS[@]}" -e ".[dev]"
printf '%s\n' "$want" >"$STAMP"
log "done: $("$PY" -c 'import torch, lightning_rtd as l; print("lightning-rtd", l.__version__, "torch", torch.__version__)')"
