"""Train an MLP on MNIST-1D (built offline by the ``mnist1d`` package) and log RTD of its
embedding layer.

    python examples/mnist1d_mlp.py --lr 0.01 --depth 3 --max_epochs 20
    python examples/mnist1d_mlp.py --help

Also usable as a Syne Tune trial script (``LocalBackend(entry_point="examples/mnist1d_mlp.py")``).
"""

from lightning_rtd.recipes.runner import main

if __name__ == "__main__":
    main("mnist1d-mlp")
