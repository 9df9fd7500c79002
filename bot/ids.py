"""Every Slack action_id, callback_id and block_id the bot uses, in one place."""

FEEDBACK = "feedback"
"""The feedback_buttons element under every answer (values "up" / "down")."""
FEEDBACK_BLOCK = "tl_feedback"

CORRECTION_VIEW = "correction"
"""The modal asking "What should the answer have been?"."""
CORRECTION_BLOCK = "tl_correction"
CORRECTION_INPUT = "correction_text"

REVIEW_APPROVE = "review_approve"
REVIEW_REJECT = "review_reject"
REVIEW_EDIT = "review_edit"
REVIEW_EDIT_VIEW = "review_edit"
REVIEW_EDIT_BLOCK = "tl_review_edit"
REVIEW_EDIT_INPUT = "review_edit_text"
PROMOTE = "promote"

REVIEW_GOLDEN = "review_golden"
"""Add the answer to the golden set the evaluation gate asks every candidate."""

ADMIN_ACTIONS = (REVIEW_APPROVE, REVIEW_REJECT, REVIEW_EDIT, PROMOTE, REVIEW_GOLDEN)
"""Buttons only admins may press; the server checks, whatever the client shows."""

SLASH_COMMAND = "/finetune"

# --- learning loop ---------------------------------------------------------------------
REVIEW_APPROVE_CORRECTION = "review_approve_correction"
"""Approve the newest correction of an answer (the answer becomes the rejected side)."""
REVIEW_BLOCK_PREFIX = "tl_review:"
"""block_id of one pending answer's buttons: the prefix plus the answer id."""
REVIEW_ACTIONS = (REVIEW_APPROVE, REVIEW_APPROVE_CORRECTION, REVIEW_REJECT, REVIEW_EDIT)
