"""Dataset tools: import tables, validate and repair fine-tuning files, estimate cost.

Run ``python -m workers.datasets --help``. The per-example checks the learning loop
reuses live in :mod:`core.examples` and are re-exported here. Nothing in this
package imports Slack.
"""

from core.examples import (
    DROP_CODES,
    FIXES,
    CachedCounter,
    Code,
    ExampleFacts,
    Finding,
    Severity,
    check_chat_example,
    check_completion_example,
    examine_chat,
    examine_completion,
    repair_chat_example,
    repair_completion_example,
)

__all__ = [
    "DROP_CODES",
    "FIXES",
    "CachedCounter",
    "Code",
    "ExampleFacts",
    "Finding",
    "Severity",
    "check_chat_example",
    "check_completion_example",
    "examine_chat",
    "examine_completion",
    "repair_chat_example",
    "repair_completion_example",
]
