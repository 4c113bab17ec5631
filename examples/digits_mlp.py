"""Train an MLP on scikit-learn's 8x8 digits and log RTD of its embedding layer.

    python examples/digits_mlp.py --lr 0.01 --width 64 --max_epochs 5
    python examples/digits_mlp.py --no-rtd --wandb   # offline W&B run in lightning_rtd_runs/
    python examples/digits_mlp.py --help             # every hyperparameter and its range

Also usable as a Syne Tune trial script (``LocalBackend(entry_point="examples/digits_mlp.py")``).
"""

from lightning_rtd.recipes.runner import main

if __name__ == "__main__":
    main("digits-mlp")
