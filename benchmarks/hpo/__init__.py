"""HPO benchmark harness for lightning-rtd: tabulate recipes, replay searches, analyse.

Run the modules from the repository root, e.g. ``python -m benchmarks.hpo.tabulate``; see
``docs/benchmarks.md`` for the full workflow.
"""
