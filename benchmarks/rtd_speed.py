"""Speed, memory and agreement of the persistence backends on symmetric RTD.

For every case x N x installed backend this script runs ``rtd(x, y, symmetric=True,
backend=...)`` in a fresh Python subprocess (one per cell, so memory peaks never leak from one
cell into the next) and prints a Markdown table:

* ``time``: median wall time of the symmetric RTD over R repeats (``--repeats``, 3 by default;
  1 for slow cells whose predicted time per call exceeds ``--slow-seconds``). Inputs are built
  and every backend module imported before the clock starts (one warm-up call at N=8).
* ``CPU``: median CPU time of the process (all threads) per call, ``time.process_time``. It is
  much less sensitive than wall time to other programs competing for the cores; a backend that
  runs both directions in two threads shows a CPU time up to twice its wall time.
* ``py peak``: peak of Python-side allocations during the timed calls, from ``tracemalloc``
  (NumPy arrays included: NumPy reports its buffers to tracemalloc; torch tensors and the C++
  heaps of the persistence engines are not).
* ``RSS growth``: growth of the process's peak resident set size during the timed calls: the
  kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` right before the
  first call and read afterwards, minus the resident size at that moment. It covers everything
  (torch, NumPy, the C++ engines, thread stacks). Where the reset is not possible (not Linux),
  the growth of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is reported instead, which is 0
  when the earlier peak (imports) was higher.
* ``RTD``: the symmetric value returned, and its largest relative difference from the value of
  the default backend (``"auto"``) on the same inputs; the script exits with status 1 when any
  difference exceeds ``--tolerance`` (1e-6).
* ``vs ripser``: ripser.py's median time divided by this backend's, measured in the same run.

ripser.py is very slow on large or unstructured clouds, so every cell has a time budget
(``--budget-seconds``, 120 by default): the time per call is predicted from the two previous sizes
of the same case and backend by the observed power law (from one previous size with exponent 4,
a deliberately pessimistic guess), and a cell whose prediction exceeds the budget is not run
("skipped (>budget)"). A cell that still runs past twice the budget is killed.

Cases:

* ``realistic``: N points of a mixture of 10 Gaussian clusters in 20-d, embedded by two randomly
  initialised MLPs (20-128-128-64 and 20-128-128-32, ReLU, fixed seeds): two different networks'
  views of the same samples.
* ``hard``: a 64-d standard Gaussian against an independent 2-d standard Gaussian: no shared
  structure at all, the worst case for clearing-based persistence engines.

Usage::

    python benchmarks/rtd_speed.py                       # everything, about 10-20 minutes
    python benchmarks/rtd_speed.py --sizes 100 500 --backends redzed ripser --cases realistic
    python benchmarks/rtd_speed.py --output docs/_bench.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

ALL_BACKENDS = ("redzed", "giotto", "ripser")
ALL_CASES = ("realistic", "hard")
DEFAULT_SIZES = (100, 250, 500, 1000, 2000)
PESSIMISTIC_EXPONENT = 4.0
MIB = 1024.0 * 1024.0

# Targets, on the realistic case with the default backend.
TARGET_N1000_S = 1.0
TARGET_N2000_S = 5.0
TARGET_SPEEDUP = 30.0


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def make_inputs(case: str, n: int):
    """The two embeddings of one cell, as float32 torch tensors (deterministic in case and n)."""
    import torch

    if case == "realistic":
        gen = torch.Generator().manual_seed(1234 + n)
        centres = 4.0 * torch.randn(10, 20, generator=gen)
        labels = torch.randint(0, 10, (n,), generator=gen)
        inputs = centres[labels] + torch.randn(n, 20, generator=gen)

        def mlp(out_dim: int, seed: int) -> torch.nn.Module:
            torch.manual_seed(seed)
            return torch.nn.Sequential(
                torch.nn.Linear(20, 128),
                torch.nn.ReLU(),
                torch.nn.Linear(128, 128),
                torch.nn.ReLU(),
                torch.nn.Linear(128, out_dim),
            )

        with torch.no_grad():
            return mlp(64, 0)(inputs), mlp(32, 1)(inputs)
    if case == "hard":
        gen = torch.Generator().manual_seed(4321 + n)
        return torch.randn(n, 64, generator=gen), torch.randn(n, 2, generator=gen)
    raise ValueError(f"unknown case {case!r}")


# --------------------------------------------------------------------------------------------
# One cell, in a child process
# --------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def _maxrss_kib() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


def run_cell(case: str, n: int, backend: str, repeats: int) -> dict:
    """Time and measure ``repeats`` symmetric RTD calls; runs inside the child process."""
    import tracemalloc

    import numpy as np
    import torch

    from lightning_rtd import rtd
    from lightning_rtd.backends import get_backend

    x, y = make_inputs(case, n)
    warm = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    rtd(warm, warm[:, :2], symmetric=True, backend=backend)  # imports, first-call overheads

    hwm_reset = _reset_peak_rss()
    rss_before = _status_kib("VmRSS") if hwm_reset else _maxrss_kib()
    tracemalloc.start()
    times, cpu_times, values = [], [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        values.append(rtd(x, y, symmetric=True, backend=backend))
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = _status_kib("VmHWM") if hwm_reset else _maxrss_kib()
    return {
        "case": case,
        "n": n,
        "backend": get_backend(backend).name,
        "times": times,
        "median": statistics.median(times),
        "cpu_median": statistics.median(cpu_times),
        "value": values[0],
        "values_agree": bool(np.ptp(values) == 0.0),
        "py_peak_mib": py_peak / MIB,
        "rss_growth_mib": max(0, rss_after - rss_before) / 1024.0,
        "rss_method": "VmHWM" if hwm_reset else "ru_maxrss",
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Cell:
    case: str
    n: int
    backend: str
    status: str = "ok"  # ok | skipped | killed | error
    repeats: int = 0
    predicted: float | None = None
    result: dict = field(default_factory=dict)


def predict(history: list[tuple[int, float]], n: int) -> float | None:
    """Predicted time per call at size ``n`` from earlier (size, time) pairs of one backend."""
    if not history:
        return None
    n1, t1 = history[-1]
    exponent = PESSIMISTIC_EXPONENT
    if len(history) >= 2:
        n0, t0 = history[-2]
        if t0 > 0 and n1 > n0:
            exponent = min(max(math.log(t1 / t0) / math.log(n1 / n0), 1.0), 6.0)
    return t1 * (n / n1) ** exponent


def launch(cell: Cell, budget: float) -> None:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--_cell",
        f"{cell.case}:{cell.n}:{cell.backend}:{cell.repeats}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2.0 * budget)
    except subprocess.TimeoutExpired:
        cell.status = "killed"
        return
    if proc.returncode != 0:
        cell.status = "error"
        cell.result = {"stderr": proc.stderr[-2000:]}
        sys.stderr.write(proc.stderr[-2000:])
        return
    cell.result = json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_time(cell: Cell, budget: float) -> str:
    if cell.status == "skipped":
        if cell.predicted is None or cell.predicted >= 3600:
            return "skipped (>budget; predicted > 1 h)"
        return f"skipped (>budget; predicted {cell.predicted:.0f} s)"
    if cell.status == "killed":
        return f"killed (>{2 * budget:.0f} s)"
    if cell.status == "error":
        return "error"
    return f"{cell.result['median']:.3f}"


def machine_description() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), {platform.system()}"
    )


def package_versions(backends: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    dists = {"redzed": "redzed-tda", "giotto": "giotto-ph", "ripser": "ripser"}
    parts = []
    for b in backends:
        try:
            parts.append(f"{dists[b]} {version(dists[b])}")
        except (KeyError, PackageNotFoundError):
            parts.append(b)
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("--backends", nargs="+", default=None, help="default: every installed one")
    p.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-seconds", type=float, default=120.0)
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=10.0,
        help="cells predicted to take longer than this per call run once",
    )
    p.add_argument("--tolerance", type=float, default=1e-6)
    p.add_argument("--output", default=None, help="also write the Markdown report to this file")
    p.add_argument("--_cell", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._cell:
        case, n, backend, repeats = args._cell.split(":")
        print(json.dumps(run_cell(case, int(n), backend, int(repeats))))
        return 0

    from lightning_rtd.backends import get_backend, list_backends

    installed = list_backends(available_only=True)
    backends = args.backends or [b for b in ALL_BACKENDS if b in installed]
    missing = [b for b in backends if b not in installed]
    if missing:
        p.error(f"backend(s) not installed: {missing}; installed: {installed}")
    default = get_backend("auto").name
    if default not in backends:
        backends.insert(0, default)
    sizes = sorted(set(args.sizes))

    started = datetime.now(timezone.utc)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    cells: list[Cell] = []
    for case in args.cases:
        for backend in backends:
            history: list[tuple[int, float]] = []
            gave_up = False
            for n in sizes:
                cell = Cell(case, n, backend)
                cells.append(cell)
                cell.predicted = predict(history, n)
                if gave_up or (cell.predicted is not None and cell.predicted > args.budget_seconds):
                    cell.status = "skipped"
                    if cell.predicted is None:
                        cell.predicted = float("inf")
                    gave_up = True
                    print(f"{case:9s} N={n:5d} {backend:7s} skipped", file=sys.stderr)
                    continue
                slow = cell.predicted is not None and cell.predicted > args.slow_seconds
                cell.repeats = 1 if slow else args.repeats
                launch(cell, args.budget_seconds)
                if cell.status != "ok":
                    gave_up = True
                    print(f"{case:9s} N={n:5d} {backend:7s} {cell.status}", file=sys.stderr)
                    continue
                history.append((n, cell.result["median"]))
                print(
                    f"{case:9s} N={n:5d} {backend:7s} {cell.result['median']:9.3f} s "
                    f"x{cell.repeats}  RTD={cell.result['value']:.6f}",
                    file=sys.stderr,
                    flush=True,
                )
    load_after = os.getloadavg() if hasattr(os, "getloadavg") else None

    by_key = {(c.case, c.n, c.backend): c for c in cells}
    worst = 0.0
    lines = [
        "| case | N | backend | median time (s) | CPU (s) | repeats | py peak (MiB) "
        f"| RSS growth (MiB) | symmetric RTD | max rel. diff vs {default} | speed-up vs ripser |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        ref = by_key.get((c.case, c.n, default))
        rip = by_key.get((c.case, c.n, "ripser"))
        if c.status != "ok":
            lines.append(
                f"| {c.case} | {c.n} | {c.backend} | {fmt_time(c, args.budget_seconds)} "
                "| | | | | | | |"
            )
            continue
        r = c.result
        diff = "n/a"
        if ref is not None and ref.status == "ok":
            denom = max(abs(ref.result["value"]), 1e-12)
            rel = abs(r["value"] - ref.result["value"]) / denom
            if ref.result["value"] == 0.0 and r["value"] == 0.0:
                rel = 0.0
            if not r["values_agree"]:
                rel = max(rel, float("inf"))
            worst = max(worst, rel)
            diff = f"{rel:.1e}"
        speed = "n/a"
        if rip is not None and rip.status == "ok":
            speed = f"{rip.result['median'] / r['median']:.1f}x"
        lines.append(
            f"| {c.case} | {c.n} | {c.backend} | {r['median']:.3f} | {r['cpu_median']:.3f} "
            f"| {c.repeats} "
            f"| {r['py_peak_mib']:.1f} | {r['rss_growth_mib']:.1f} | {r['value']:.6f} "
            f"| {diff} | {speed} |"
        )

    def t(case: str, n: int, backend: str) -> float | None:
        c = by_key.get((case, n, backend))
        return c.result["median"] if c is not None and c.status == "ok" else None

    targets = []
    for case in args.cases:
        t1000, t2000 = t(case, 1000, default), t(case, 2000, default)
        targets.append(
            (
                f"{case}: symmetric RTD at N=1000 <= {TARGET_N1000_S:.1f} s ({default})",
                None if t1000 is None else t1000 <= TARGET_N1000_S,
                "not measured" if t1000 is None else f"{t1000:.3f} s",
            )
        )
        ratios = [
            (n, t(case, n, "ripser") / t(case, n, default))
            for n in sizes
            if t(case, n, "ripser") and t(case, n, default)
        ]
        if ratios:
            n_big, ratio = ratios[-1]
            targets.append(
                (
                    f"{case}: >= {TARGET_SPEEDUP:.0f}x faster than ripser (largest N both ran)",
                    ratio >= TARGET_SPEEDUP,
                    f"{ratio:.1f}x at N={n_big}",
                )
            )
        else:
            targets.append(
                (f"{case}: >= {TARGET_SPEEDUP:.0f}x faster than ripser", None, "not measured")
            )
        targets.append(
            (
                f"{case}: symmetric RTD at N=2000 < {TARGET_N2000_S:.1f} s ({default})",
                None if t2000 is None else t2000 < TARGET_N2000_S,
                "not measured" if t2000 is None else f"{t2000:.3f} s",
            )
        )

    methods = sorted({c.result.get("rss_method", "") for c in cells if c.status == "ok"})
    report = [
        f"Run {started:%Y-%m-%d %H:%M} UTC on {machine_description()}.",
        f"Backends: {package_versions(backends)}; default backend (`auto`): {default}.",
        f"Load average before/after: {_fmt_load(load_before)} / {_fmt_load(load_after)}; "
        f"peak RSS measured with {', '.join(methods) or 'n/a'}; "
        f"budget {args.budget_seconds:.0f} s per cell.",
        "",
        *lines,
        "",
        "| target | result | measured |",
        "|---|---|---|",
        *[f"| {name} | {_verdict(ok)} | {measured} |" for name, ok, measured in targets],
        "",
        f"Largest relative disagreement between backends: {worst:.1e} "
        f"(tolerance {args.tolerance:.0e}): {'PASS' if worst <= args.tolerance else 'FAIL'}.",
    ]
    text = "\n".join(report)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    return 0 if worst <= args.tolerance else 1


def _fmt_load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else f"{load[0]:.2f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


if __name__ == "__main__":
    sys.exit(main())
