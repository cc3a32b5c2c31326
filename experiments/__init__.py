"""Research harnesses beside the pipeline, run from the repository root: python -m experiments.NAME."""
