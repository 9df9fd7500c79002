"""Dataset tools: import tables, validate and repair fine-tuning files, estimate cost.

Run ``python -m workers.datasets --help``. The checks of a single example are the
training-data contract's (:mod:`core.examples`), shared with the set builder and the
trainers. Nothing in this package imports Slack.
"""
