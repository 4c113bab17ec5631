"""Validate the simulator: run the same search (method, seed) for real, with Syne Tune's
``LocalBackend`` training every trial (`trial`), and replayed (`simulate.run_search`), then
compare them trial by trial.

With one worker (the default) reports arrive in a deterministic order and both runs stop after
the same number of finished trials. With deterministic training (the recipes train with
``deterministic=True`` and a fixed seed) the replay should reproduce: the configuration of every
trial, the rung at which ASHA stopped it (its last reported epoch), every reported validation
metric, and the ``rtd/top`` / ``rtd/all`` values computed from the search's own history. Wall
times differ: real trials are separate processes that pay Python and library start-up.

With ``--workers 2`` the order in which reports arrive depends on real timing, so scheduler
decisions (and ``rtd/top`` / ``rtd/all``, which depend on which other trials had reported) can
differ; the comparison then counts what agrees: reported values of the same (trial, epoch), the
last epoch of each trial, the best metric found.

Writes ``<root>/<benchmark>/validation/<method>-seed<k>-w<workers>.json``.

Usage (from the repository root; ~3 minutes per method for 12 digits trials on 2 cores):

    python -m benchmarks.hpo.validate --benchmark digits-mlp --method asha moasha-top-max \\
        --seed 0 --trials 12
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.hpo.benchmarks import benchmark_dir, get_benchmark, syne_tune_space
from benchmarks.hpo.methods import get_method, make_preset
from benchmarks.hpo.simulate import RTDOracle, parse_seeds, run_search
from benchmarks.hpo.tabulate import atomic_write_json, load_tabulation

TRIAL_SCRIPT = Path(__file__).resolve().parent / "trial.py"


def real_search(
    bench_name: str, method_name: str, seed: int, trials: int, workers: int, folder: Path
) -> tuple[list[dict[str, Any]], float]:
    """Run the real search; returns its reports (dicts with trial, epoch, metrics, time)."""
    import pandas as pd
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend import LocalBackend

    bench = get_benchmark(bench_name)
    method = get_method(method_name)
    space = syne_tune_space(bench)
    space.update({"hpo_benchmark": bench.name, "hpo_method": method.name, "hpo_seed": seed})
    preset = make_preset(method, bench, seed=seed, config_space=space)
    folder.mkdir(parents=True, exist_ok=True)
    old = os.environ.get("SYNETUNE_FOLDER")
    os.environ["SYNETUNE_FOLDER"] = str(folder)
    env_path = os.environ.get("PYTHONPATH", "")
    repo = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = repo + (os.pathsep + env_path if env_path else "")
    start = time.perf_counter()
    try:
        tuner = Tuner(
            trial_backend=LocalBackend(entry_point=str(TRIAL_SCRIPT)),
            scheduler=preset.scheduler,
            stop_criterion=StoppingCriterion(max_num_trials_finished=trials),
            n_workers=workers,
            sleep_time=0.5,
            tuner_name=f"validate-{bench.name}-{method.name}-{seed}",
            save_tuner=False,
        )
        tuner.run()
    finally:
        if old is None:
            os.environ.pop("SYNETUNE_FOLDER", None)
        else:
            os.environ["SYNETUNE_FOLDER"] = old
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            os.environ.pop("PYTHONPATH", None)
    wall = time.perf_counter() - start
    df = pd.read_csv(tuner.tuner_path / "results.csv.zip")
    reports = []
    for row in df.to_dict("records"):
        reports.append(
            {
                "trial": int(row["trial_id"]),
                "epoch": int(row["epoch"]),
                "val": float(row[bench.metric]),
                "time": float(row["st_tuner_time"]),
                **{k: float(row[k]) for k in ("rtd/top", "rtd/all", "rtd/noise") if k in row},
            }
        )
    return reports, wall


def compare(
    bench_name: str, method_name: str, seed: int, trials: int, workers: int, root: Any
) -> dict[str, Any]:
    bench = get_benchmark(bench_name)
    method = get_method(method_name)
    folder = benchmark_dir(bench, root) / "validation"
    real, wall = real_search(
        bench_name, method_name, seed, trials, workers, folder / f"tuner-{method_name}-{seed}"
    )
    tab = load_tabulation(bench, root)
    oracle = RTDOracle(bench, root)
    try:
        sim = run_search(
            tab,
            method,
            seed,
            oracle=oracle,
            budget_s=1e12,
            n_workers=workers,
            max_num_trials_finished=trials,
        )
    finally:
        oracle.cache.close()
    real_by = {(r["trial"], r["epoch"]): r for r in real}
    sim_by = {(r["trial"], r["epoch"]): r for r in sim["reports"]}
    real_last: dict[int, int] = {}
    for t, e in real_by:
        real_last[t] = max(real_last.get(t, 0), e)
    sim_last: dict[int, int] = {}
    for t, e in sim_by:
        sim_last[t] = max(sim_last.get(t, 0), e)
    common = sorted(set(real_by) & set(sim_by))
    keys = [f"rtd/{r}" for r in method.rtd if r != "noise"]
    equal_rtd = compared_rtd = 0
    rtd_diffs = []
    for k in common:
        for key in keys:
            a, b = real_by[k].get(key), sim_by[k].get(key)
            if a is None or b is None:
                continue
            compared_rtd += 1
            rel = abs(a - b) / max(abs(a), abs(b), 1e-12)
            rtd_diffs.append(rel)
            equal_rtd += rel < 1e-4
    trial_ids = sorted(set(real_last) | set(sim_last))
    result = {
        "benchmark": bench.name,
        "method": method.name,
        "seed": seed,
        "n_workers": workers,
        "num_trials": len(trial_ids),
        "same_configs": True,  # by construction: trial.py and the replay share the permutation
        "same_rungs": sum(real_last.get(t) == sim_last.get(t) for t in trial_ids),
        "last_epoch_real": {str(t): real_last.get(t) for t in trial_ids},
        "last_epoch_sim": {str(t): sim_last.get(t) for t in trial_ids},
        "compared_reports": len(common),
        "reports_only_real": len(set(real_by) - set(sim_by)),
        "reports_only_sim": len(set(sim_by) - set(real_by)),
        "equal_val": sum(abs(real_by[k]["val"] - sim_by[k]["val"]) < 1e-6 for k in common),
        "compared_rtd": compared_rtd,
        "equal_rtd": equal_rtd,
        "max_rel_rtd_diff": max(rtd_diffs) if rtd_diffs else math.nan,
        "real_wall_s": wall,
        "sim_time_s": max((r["time"] for r in sim["reports"]), default=0.0),
        "real_reports": real,
        "sim_reports": sim["reports"],
    }
    atomic_write_json(folder / f"{method.name}-seed{seed}-w{workers}.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="digits-mlp")
    parser.add_argument("--method", nargs="+", default=["asha", "moasha-top-max"])
    parser.add_argument("--seed", nargs="+", default=["0"])
    parser.add_argument("--trials", type=int, default=12, help="finished trials per search")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--root", default=None)
    args = parser.parse_args(argv)
    for m in args.method:
        for s in parse_seeds(args.seed):
            r = compare(args.benchmark, m, s, args.trials, args.workers, args.root)
            print(
                f"{args.benchmark} {m} seed {s}: rungs {r['same_rungs']}/{r['num_trials']}, "
                f"val {r['equal_val']}/{r['compared_reports']}, rtd {r['equal_rtd']}/"
                f"{r['compared_rtd']}, only-real {r['reports_only_real']}, only-sim "
                f"{r['reports_only_sim']}; real {r['real_wall_s']:.0f}s, "
                f"sim {r['sim_time_s']:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
