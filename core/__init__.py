"""Shared core: imported by the Slack process (bot/) and the RQ workers (workers/) alike.

Settings, Redis key names and the answer store, token counting, the model client,
metrics, logs, and the training-example approval that both sides record.
"""
