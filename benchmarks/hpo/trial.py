"""Training script of the *real* searches of `validate` (run by Syne Tune's ``LocalBackend``).

It trains the pool configuration that the replay would give the same trial: trial t of a
search with seed s trains ``pool[pool_permutation(range(num_configs), s)[t]]`` (the scheduler's
own suggestion, a random draw, is ignored), with the recipe's standard Syne Tune trial entry
point `lightning_rtd.recipes.runner.main` (reporter, reference store in the tuner folder, RTD
references the method reads).

Arguments: ``--hpo_benchmark NAME --hpo_method NAME --hpo_seed S`` (constants of the config
space) plus Syne Tune's ``--st_checkpoint_dir``; other arguments are ignored.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script by LocalBackend: import from the repo root,
    # not from this folder (whose benchmarks.py would shadow the `benchmarks` namespace)
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path(here)]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.hpo.benchmarks import get_benchmark, pool_configs
from benchmarks.hpo.methods import get_method, make_preset


def trial_argv(
    benchmark: str, method: str, seed: int, checkpoint_dir: str
) -> tuple[str, list[str]]:
    """The recipe name and the argument list `runner.main` gets for this trial."""
    from benchmarks.hpo.simulate import pool_permutation

    bench = get_benchmark(benchmark)
    m = get_method(method)
    if m.model_based:
        raise SystemExit(f"validate supports random-sampling methods only, not {method}")
    trial_id = int(Path(checkpoint_dir).parent.name)
    perm = pool_permutation(range(bench.num_configs), seed)
    config = pool_configs(bench)[perm[trial_id % len(perm)]]
    preset = make_preset(m, bench, seed=seed)
    argv = [f"--{k}={v}" for k, v in config.items()]
    argv += [
        f"--max_epochs={bench.max_epochs}",
        f"--seed={bench.train_seed}",
        f"--num_points={bench.num_points}",
        f"--st_checkpoint_dir={checkpoint_dir}",
        "--objectives=" + ",".join(f"{o.key}:{o.mode}" for o in preset.objectives),
        f"--minimize_all={preset.minimize_all}",
    ]
    if m.rtd:
        argv.append("--rtd_references=" + ",".join(dict.fromkeys(["noise", *m.rtd])))
    else:
        argv.append("--no-rtd")
    return bench.recipe, argv


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hpo_benchmark", required=True)
    parser.add_argument("--hpo_method", required=True)
    parser.add_argument("--hpo_seed", type=int, required=True)
    parser.add_argument("--st_checkpoint_dir", required=True)
    args, _ = parser.parse_known_args(argv)
    recipe, run_argv = trial_argv(
        args.hpo_benchmark, args.hpo_method, args.hpo_seed, args.st_checkpoint_dir
    )
    from lightning_rtd.recipes.runner import main as run_main

    run_main(recipe, run_argv)


if __name__ == "__main__":
    main()
