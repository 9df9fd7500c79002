"""Every text the bot shows people in Slack, in one place."""

THINKING = "is thinking…"
EMPTY_ANSWER = "_(The model returned an empty answer. Try rephrasing the question.)_"
ANSWER_CONTINUED = "_(continued below)_"

MODEL_ERRORS = {
    "timeout": "Sorry, the model took too long to answer. Please try again in a minute.",
    "rate_limited": "Sorry, the model is busy right now (rate limited). Please try again shortly.",
    "unavailable": "Sorry, the model is unavailable at the moment. Please try again later.",
    "context_too_long": (
        "Sorry, this conversation is too long for the model. Start a new thread to continue."
    ),
    "model_not_found": (
        "Sorry, the configured model could not be found. An admin can check `/finetune status`."
    ),
    "auth": "Sorry, I can't reach the model: its API key was refused. An admin needs to fix it.",
    "bad_request": "Sorry, the model refused this request.",
    "interrupted": "_(The answer was interrupted: the model stopped responding.)_",
}
UNEXPECTED_ERROR = "Sorry, something went wrong while answering. The error has been logged."
TOO_LONG = (
    "Sorry, your message is too long for me ({tokens} tokens; I can read {budget}). "
    "Please shorten it or split it up."
)
NO_TEXT = "I can only read text messages for now: please type your question."

FEEDBACK_GOOD = "Good answer"
FEEDBACK_BAD = "Bad answer"
VOTE_THANKS = {"up": "Thanks! Your :+1: was recorded.", "down": "Thanks, your :-1: was recorded."}
VOTE_CHANGED = {
    "up": "Changed your vote to :+1:.",
    "down": "Changed your vote to :-1:.",
}
VOTE_UNCHANGED = "Your vote was already recorded."
VOTE_UNAVAILABLE = (
    "Sorry, your vote could not be recorded right now (storage is unavailable). "
    "Please try again later."
)
VOTE_NO_ANSWER = "This message is no longer in my records, so the vote was not stored."

CORRECTION_TITLE = "Improve this answer"
CORRECTION_LABEL = "What should the answer have been?"
CORRECTION_HINT = "An admin reviews corrections before the model learns from them."
CORRECTION_SUBMIT = "Send"
CORRECTION_CANCEL = "Skip"
CORRECTION_THANKS = "Thanks for the correction: it goes to an admin for review."
CORRECTION_EMPTY = "Please write what the answer should have been (or press Skip)."
CORRECTION_TOO_LONG = "Please keep the correction under {limit} characters."

HOME_TITLE = "tuneloop"
HOME_MODEL = "*Current model:* `{model}`"
HOME_STATS = "*Last 7 days:* {answers} answers, {up} :+1:, {down} :-1:"
HOME_PENDING = "*Approved examples waiting for the next training run:* {count}"
HOME_STORAGE_DOWN = "_Statistics are unavailable right now (storage unreachable)._"
HOME_HELP = "Mention me in a channel or send me a direct message to ask a question."

ASSISTANT_GREETING = "Hi! Ask me anything. Rate my answers with the thumbs to help me improve."
ASSISTANT_PROMPTS = (
    ("What can you do?", "What can you help me with?"),
    ("Summarise", "Summarise this conversation in three bullet points."),
)

NOT_ADMIN = "Sorry, only tuneloop admins can do that."
