"""Search the digits MLP with Ray Tune: ASHA stops trials on RTD, trials share an S3 store.

    python examples/ray_tune_search.py --num-samples 4 --max-epochs 3 --store /tmp/rtd-store
    python examples/ray_tune_search.py --num-samples 16 --max-epochs 9 \\
        --store s3://my-bucket/searches/digits-1 --rtd-direction min
    python examples/ray_tune_search.py --store s3://bucket/prefix \\
        --endpoint-url http://127.0.0.1:9000     # MinIO, moto or another S3-compatible server
    python examples/ray_tune_search.py --address auto --forward-aws-env \\
        --store s3://my-bucket/searches/digits-2  # an existing multi-machine Ray cluster
    python examples/ray_tune_search.py --help

Every trial trains the ``digits-mlp`` recipe (scikit-learn's 8x8 digits, offline) with an
``RTDCallback`` (RTD of the embedding layer against matched noise and against the best other
trial of the search, read from the shared reference store) and a ``RayTuneReporter``; ASHA
(``--preset``, default ``rtd-noise-only``) stops the trials whose ``rtd/noise`` is worse than
their rung's cut-off, in the direction of ``--rtd-direction``. At the end the best
configuration is printed, by the scheduler's objective and by validation accuracy.

S3 credentials are read by s3fs from the usual places (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, instance roles). A local cluster started by this script
inherits the environment; on a cluster started elsewhere each node needs them, or pass
``--forward-aws-env`` to ship this shell's ``AWS_*`` variables through Ray's runtime
environment. See docs/guides/ray.md.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path
from typing import Any

RECIPE = "digits-mlp"


def ray_search_space(space: dict[str, tuple[Any, ...]]) -> dict[str, Any]:
    """A recipe search space (bounds inclusive) as Ray Tune domains."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, (kind, *args) in space.items():
        if kind == "choice":
            out[key] = tune.choice(list(args[0]))
        elif kind == "uniform":
            out[key] = tune.uniform(args[0], args[1])
        elif kind == "loguniform":
            out[key] = tune.loguniform(args[0], args[1])
        elif kind == "randint":  # Ray's upper bound is exclusive
            out[key] = tune.randint(args[0], args[1] + 1)
        elif kind == "lograndint":
            out[key] = tune.lograndint(args[0], args[1] + 1)
        else:
            raise ValueError(f"unsupported search space kind {kind!r} for {key!r}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from lightning_rtd.integrations.ray import list_ray_presets

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--num-samples", type=int, default=4, help="trials to sample")
    p.add_argument("--max-epochs", type=int, default=3, help="epochs of a trial (ASHA max_t)")
    p.add_argument(
        "--store",
        default=None,
        help="RTD reference store shared by all trials: s3://bucket/prefix or a local folder "
        "(default: <storage-path>/<name>-rtd-store, single machine only)",
    )
    p.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint for the store")
    p.add_argument(
        "--preset", default="rtd-noise-only", choices=list_ray_presets(), help="ASHA preset"
    )
    p.add_argument(
        "--rtd-direction",
        choices=("max", "min"),
        default="max",
        help="max: keep trials far from noise (the paper's diversity reading); min: the opposite",
    )
    p.add_argument("--grace-period", type=int, default=1)
    p.add_argument("--reduction-factor", type=float, default=2)
    p.add_argument("--num-points", type=int, default=200, help="RTD probe size")
    p.add_argument("--seed", type=int, default=0, help="seed of the search and of the trials")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of a local Ray cluster")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--address", default=None, help="join an existing Ray cluster ('auto')")
    p.add_argument(
        "--forward-aws-env",
        action="store_true",
        help="pass this shell's AWS_* variables to the Ray workers (runtime_env)",
    )
    p.add_argument(
        "--storage-path",
        default="ray_results",
        help="where Ray writes its results (a folder, or a URI such as s3://...)",
    )
    p.add_argument("--name", default=None, help="experiment name (default: rtd-<timestamp>)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import ray
    from ray import tune

    from lightning_rtd.integrations.ray import make_trainable, ray_scheduler
    from lightning_rtd.recipes import get_recipe

    recipe = get_recipe(RECIPE)
    name = args.name or f"rtd-{time.strftime('%Y%m%d-%H%M%S')}"
    storage_path = args.storage_path
    if "://" not in storage_path:
        storage_path = str(Path(storage_path).resolve())
    store = args.store or os.path.join(storage_path, f"{name}-rtd-store")
    storage_options = {"client_kwargs": {"endpoint_url": args.endpoint_url}}

    is_rtd = args.preset.startswith("rtd-")
    preset = ray_scheduler(
        args.preset,
        metric=recipe.metric,
        mode=recipe.mode,
        max_t=args.max_epochs,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        seed=args.seed,
        rtd_direction=args.rtd_direction if is_rtd and args.preset.endswith("-only") else None,
    )
    # plain values only: the trainable is pickled to every worker (not the scheduler)
    objectives, extra_metrics = preset.objectives, preset.extra_metrics
    resource_attr = preset.resource_attr
    directions = preset.mode if is_rtd else args.rtd_direction
    num_points, max_epochs, seed = args.num_points, args.max_epochs, args.seed
    metric, mode = recipe.metric, recipe.mode

    def train_digits(config: dict[str, Any], ctx: Any) -> None:
        from lightning_rtd import RTDCallback
        from lightning_rtd.integrations.ray import RayTuneReporter
        from lightning_rtd.recipes import train

        rtd_callback = RTDCallback(
            layer="embedding",
            num_points=num_points,
            references=("noise", "top"),
            store=ctx.store,
            trial_id=ctx.trial_id,
            objective=metric,
            mode=mode,
            directions=directions,
        )
        reporter = RayTuneReporter(
            objectives, resource_attr=resource_attr, extra_metrics=extra_metrics
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*num_points=.*")
            train(
                RECIPE,
                config,
                max_epochs=max_epochs,
                callbacks=[rtd_callback, reporter],
                default_root_dir=ctx.trial_dir,
                seed=seed,
                # the reporter is a Lightning Checkpoint callback
                trainer_kwargs={"enable_checkpointing": True},
            )

    trainable = make_trainable(
        train_digits,
        store=store,
        storage_options=storage_options if args.endpoint_url and "://" in store else None,
    )

    env_vars = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    runtime_env = {"env_vars": env_vars} if args.forward_aws_env and env_vars else None
    if args.address:
        ray.init(address=args.address, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, runtime_env=runtime_env)

    print(f"preset {preset.name}: {preset.description}")
    print(f"RTD reference store: {store}")
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": args.cpus_per_trial}),
        param_space=ray_search_space(dict(recipe.search_space)),
        tune_config=preset.tune_config(num_samples=args.num_samples, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage_path, name=name, verbose=1),
    )
    results = tuner.fit()
    if results.errors:
        print(f"{len(results.errors)} trial(s) failed, e.g.: {results.errors[0]}")

    df = results.get_dataframe()
    cols = [c for c in ("trial_id", "epoch", preset.metric, recipe.metric) if c in df.columns]
    print(df[cols].to_string(index=False))
    best = results.get_best_result()  # the preset's metric and mode
    print(
        f"best by {preset.metric} ({preset.mode}): {best.config} -> "
        f"{preset.metric}={best.metrics[preset.metric]:.4f} after {best.metrics['epoch']} epochs"
    )
    if preset.metric != recipe.metric:
        by_metric = results.get_best_result(metric=recipe.metric, mode=recipe.mode)
        print(
            f"best by {recipe.metric} ({recipe.mode}): {by_metric.config} -> "
            f"{recipe.metric}={by_metric.metrics[recipe.metric]:.4f}"
        )
    print(f"Ray results: {storage_path}/{name}")
    ray.shutdown()


if __name__ == "__main__":
    main()
