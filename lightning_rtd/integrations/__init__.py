"""Integrations of lightning-rtd with hyperparameter-search frameworks.

Each integration lives in its own submodule and imports its framework only when that submodule
is imported, so ``import lightning_rtd.integrations`` stays cheap and works without any of the
optional extras installed:

- [`lightning_rtd.integrations.synetune`][lightning_rtd.integrations.synetune]: Syne Tune 0.16
  (``pip install "lightning-rtd[synetune]"``): a reporter callback, trial-argument plumbing for
  ``LocalBackend`` scripts and scheduler presets (ASHA, Hyperband, BOHB, MOASHA on RTD).
"""

__all__: list[str] = []
