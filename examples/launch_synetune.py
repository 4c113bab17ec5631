"""Tune a recipe with Syne Tune: schedulers that stop and promote trials on RTD.

    python examples/launch_synetune.py --recipe digits-mlp --scheduler moasha-noise-max \\
        --n-workers 2 --max-wallclock 90
    python examples/launch_synetune.py --recipe mnist1d-mlp --scheduler asha --max-epochs 20
    python examples/launch_synetune.py --scheduler rtd-top-only-max --set width=choice:16,32
    python examples/launch_synetune.py --help     # every option and scheduler preset

Each trial runs ``examples/<recipe>.py`` through Syne Tune's ``LocalBackend`` and reports the
names its scheduler reads once per epoch. At the end the best configuration is printed and a
plot of the search is written to the tuner's results folder (``$SYNETUNE_FOLDER/<tuner-name>``,
or ``~/syne-tune/<tuner-name>``). See docs/guides/synetune.md.
"""

from pathlib import Path

from lightning_rtd.integrations.synetune_launch import main

if __name__ == "__main__":
    main(examples_dir=Path(__file__).resolve().parent)
