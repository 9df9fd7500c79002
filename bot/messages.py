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
CUT_OFF = "_(This answer was cut off: the bot restarted. It is answered again below.)_"
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


NOT_ADMIN = "Sorry, only tuneloop admins can do that."

# --- learning loop: /finetune, review, training runs ------------------------------------
FINETUNE_HELP = """*`/finetune` commands*
• `help` – this list
• `status` – current model and its satisfaction, the canary, examples waiting, the running job
• `forget-me` – delete your questions, answers, votes and corrections from tuneloop
_Admins only:_
• `review` – rated answers waiting for approval (approve, reject, edit)
• `retrain [--dry-run]` – train on the examples approved since the last run (`--dry-run`: build and check the set, upload nothing)
• `cancel` – stop the running training run
• `models` – every model version: lineage, satisfaction, cost; candidates and promotion history
• `canary [promote|rollback]` – the canary's progress, or end it now either way
• `promote <model>` – switch the bot to a model now
• `rollback` – return to the previous model at once
• `export [set-id]` – get a training set (the latest by default) in a direct message
• `forget @user` – delete a user's data, as `forget-me` does for oneself"""
FINETUNE_UNREADABLE = "Could not read that command ({error}). Try `/finetune help`."
FINETUNE_UNKNOWN = "Unknown command `{name}`. Try `/finetune help`."
FINETUNE_USAGE = "Usage: `/finetune {usage}`"
STORAGE_DOWN = "That is unavailable right now: storage cannot be reached. Please try again later."

STATUS_MODEL = "*Current model:* `{model}`"
STATUS_WAITING = "*Approved examples waiting for the next run:* {count}"
STATUS_REVIEW = "*Rated answers waiting for review:* {count}"
STATUS_RUN = "*Running:* `{run_id}` ({status}) started by <@{admin}>"
STATUS_JOB = "*Fine-tuning job:* `{job_id}` ({job_status})"
STATUS_EVENT = "*Last event:* {event}"
STATUS_NO_RUN = "*No training run is going.*"
STATUS_LAST_RUN = "*Last run:* `{run_id}` {status}"

REVIEW_EMPTY = "Nothing to review: every rated answer has been decided."
REVIEW_HEADER = "Rated answers waiting for review ({shown} of {total})"
REVIEW_ITEM = "*Q:* {question}\n*A:* {answer}"
REVIEW_VOTES = ":+1: {up}   :-1: {down}   asked by <@{asker}>   model `{model}`"
REVIEW_CORRECTION = "*Correction by <@{user}>:* {text}"
REVIEW_APPROVE = "Approve answer"
REVIEW_APPROVE_CORRECTION = "Approve correction"
REVIEW_REJECT = "Reject"
REVIEW_EDIT = "Edit…"
REVIEW_DONE = {
    "approved": "Approved: the answer will be trained on in the next run.",
    "corrected": "Approved the correction: it will be trained on in the next run.",
    "edited": "Approved your edited answer: it will be trained on in the next run.",
    "rejected": "Rejected: nothing will be learned from that answer.",
}
REVIEW_ALREADY = "That answer was already decided ({decision} by {by})."
REVIEW_GONE = "That answer is no longer stored."
REVIEW_NO_CORRECTION = "That answer has no correction to approve."
REVIEW_EDIT_TITLE = "Edit before approving"
REVIEW_EDIT_LABEL = "The answer the model should learn"
REVIEW_EDIT_SUBMIT = "Approve"
REVIEW_EDIT_EMPTY = "Please write the answer to approve (or close to cancel)."

RETRAIN_STARTED = (
    "Training run `{run_id}` started: building the training set from the examples "
    "approved since the last run. Progress goes to the thread in <#{channel}>."
)
RETRAIN_DRY_STARTED = (
    "Dry run `{run_id}`: building and checking the training set (nothing is uploaded). "
    "The result comes here in a moment."
)
RETRAIN_BUSY = (
    "Training run `{run_id}` is already going ({status}, started by <@{admin}>); "
    "one run at a time. `/finetune status` shows where it is, `/finetune cancel` stops it."
)
RUN_THREAD_ROOT = ":hammer_and_wrench: Training run `{run_id}` started by <@{admin}>. Progress follows in this thread."
CANCEL_NONE = "No training run is going."
CANCEL_ASKED = "Cancelling training run `{run_id}` ({status})."
PROMOTE_UNKNOWN = (
    "`{model}` is neither the base model nor a model a training run produced. "
    "`/finetune models` lists them."
)
PROMOTE_ASKED = "Promoting `{model}`…"
PROMOTED = "The bot now answers with `{model}` (was `{previous}`). `/finetune rollback` undoes it."
PROMOTE_FAILED = "Could not promote `{model}`: {error}"
ROLLED_BACK = "Rolled back: the bot answers with `{to}` again (was `{frm}`)."
ROLLBACK_NONE = "Nothing to roll back to: {reason}"
EXPORT_NONE = "No training set has been built yet: `/finetune retrain --dry-run` builds one."
EXPORT_UNKNOWN = "There is no training set `{set_id}`."
EXPORT_ASKED = (
    "Sending training set `{set_id}` to you in a direct message (only you can see it; a set "
    "holds other people's conversations, so it is never posted in a channel)…"
)
COMMAND_REPLAYED = (
    "`/finetune {name}` with this trigger was already run; a repeated request is not run again."
)
EXPORT_NO_DM = (
    "I could not open a direct message with you, and a training set is never posted in a "
    "channel: nothing was sent."
)
EXPORT_COMMENT = (
    "Training set `{set_id}` (version {version}): {train} training and {valid} validation examples."
)
EXPORT_MISSING_FILES = "The files of training set `{set_id}` are no longer on the training worker."
EXPORT_TOO_LARGE = (
    "Training set `{set_id}` is {size_mb} MB, more than the {limit_mb} MB an export may send: "
    "nothing was sent. Its files are on the training worker, under `training.sets_dir`."
)
EXPORT_EXPIRED = (
    "Training set `{set_id}` could not be sent in time and was not kept: "
    "`/finetune export {set_id}` sends it again."
)

MODELS_CURRENT = "*Current model:* `{model}`"
MODELS_CANDIDATES = "*Trained models (newest first):*"
MODELS_CANDIDATE = (
    "• `{model}` – run `{run_id}`, set `{set_id}`, {trained} examples in total{score}"
)
MODELS_HISTORY = "*History (newest first):*"
MODELS_HISTORY_ITEM = "• {when} {action} `{model}` (from `{previous}`) by {by}"
MODELS_NONE = "_No model has been trained yet._"

RUN_STARTED = (
    "Fine-tuning job `{job_id}` created on {backend}, continuing from `{base}`.\n"
    "{counts}\n*Hyper-parameters:* {hyper}{lr_note}"
)
RUN_COUNTS = (
    "*Set `{set_id}`:* {train} training examples ({new} new, {replay} replayed) and "
    "{valid} validation; dropped {exact} exact and {near} near duplicates, {invalid} invalid."
)
RUN_TOKENS = "*Tokens:* {total:,} in all (mean {mean}, p90 {p90}, max {max}){estimated}; ~{billed:,} billed for {epochs} epoch(s){cost}."
RUN_PROGRESS = "Step {step}/{total_steps}: train loss {train_loss}, valid loss {valid_loss}, token accuracy {accuracy}"
RUN_EVENT = "{message}"
RUN_TRAINED = "Training finished: `{model}`. Checking it against `{current}` on held-out and golden questions…"
RUN_PROMOTED = (
    ":white_check_mark: Promoted `{model}`: it scored {cand} against {cur} for `{current}` "
    "({scorer}, {items} questions). The bot answers with it from now on."
)
RUN_HELD = (
    ":warning: Not promoted: `{model}` scored {cand} against {cur} for `{current}` "
    "({scorer}, {items} questions, tolerance {tolerance}). `/finetune promote {model}` or the "
    "button below promotes it anyway."
)
RUN_EVAL_FAILED = (
    ":warning: `{model}` was trained but could not be evaluated ({error}). "
    "`/finetune promote {model}` promotes it anyway."
)
RUN_WORSE_EXAMPLE = (
    "• _{question}_\n   expected: {expected}\n   new: {candidate}\n   current: {current}"
)
RUN_FAILED = ":x: Training run `{run_id}` failed: {error}\nNo approved example was consumed: they wait for the next run."
RUN_CANCELLED = (
    "Training run `{run_id}` was cancelled{by}. The approved examples wait for the next run."
)
RUN_TOO_FEW = (
    "Not enough examples to train: {new} usable new example(s) (after removing duplicates "
    "and invalid ones), at least {needed} needed. Approve {missing} more, then `/finetune retrain`."
)
RUN_DRY = "*Dry run* – nothing was uploaded.\n{counts}\n{tokens}{issues}{pii}"
RUN_ISSUES = "\n*Left out:* {issues}"
RUN_PII = "\n*PII scrubbed:* {pii}"
RUN_LOSS_TITLE = "Loss curve of {run_id}"
PROMOTE_BUTTON = "Promote anyway"

FORGOTTEN = (
    "Deleted the data of <@{user}>: {answers} answered questions (with the votes and "
    "corrections on them), {votes} votes and {corrections} corrections on other answers, "
    "{examples} training examples holding anything of theirs; their messages were removed "
    "from {scrubbed} other people's conversations."
)
FORGOTTEN_FILES = "Deleted the training files uploaded to the provider that may hold it: {files}."
FORGOTTEN_SETS = "Deleted the training sets built from it: {sets}."
FORGOTTEN_UNDELETED = "Could not delete (try again, or delete them at the provider): {files}."
FORGOTTEN_SETS_ELSEWHERE = (
    "These training sets are not on this machine: delete their folders on the training "
    "worker: {sets}."
)
FORGOTTEN_MODELS = (
    "Cannot be deleted: these models were trained on it and cannot unlearn an example: "
    "{models}. To be rid of it, roll back to a model trained before and retrain."
)

# --- agent experience and files in questions ------------------------------------
VIEWING_NOTE = "The user is currently looking at {places} in Slack."
VIEWING_CHANNEL = "<#{channel}>"
VIEWING_MESSAGE = "a message in <#{channel}> (ts {ts})"
VIEWING_CANVAS = "canvas {id}"
VIEWING_LIST = "list {id}"
FILE_HEADER = "[Attached file: {name}]"
FILE_CUT = "[{name} was cut: {kept} of {tokens} tokens fit in the prompt.]"
FILE_NOTICE_CUT = "_{name} is long: I read its first {kept} of {tokens} tokens._"
FILE_NOTICE_TOO_BIG = "_I could not read {name}: it is {size}, the limit is {limit}._"
FILE_NOTICE_UNSUPPORTED = (
    "_I cannot read {name} ({kind}): I read text, Markdown, CSV, JSON, code and PDF files, "
    "and images._"
)
FILE_NOTICE_NO_VISION = "_I cannot look at {name}: the current model does not read images._"
FILE_NOTICE_UNREADABLE = "_I could not download or read {name}: I answered without it._"
FILE_NOTICE_TOO_MANY = "_I read the first {limit} files only; {skipped} were left out._"
FILE_NOTICE_NO_ROOM = "_{name} did not fit in what I can read at once: I answered without it._"
FILE_NOTICE_OFF = "_Files are not read here: I answered from your text only._"
FILES_ONLY_QUESTION = "Please look at the attached file(s)."

# --- satisfaction per model version, canary, cost -------------------------------------------
SAT_HEADER = "*Satisfaction per model version* (up-rate, 95% Wilson interval):"
SAT_LINE = (
    "• `{model}`{tags}: {answers} answers, {up} :+1: {down} :-1: → {rate}, "
    "{corrections} corrections, {cost}"
)
SAT_CURRENT = (
    "*Satisfaction:* {answers} answers, {up} :+1: {down} :-1: → {rate}, {corrections} corrections"
)
SAT_RATE = "{rate:.0%} ({low:.0%}–{high:.0%})"
SAT_NO_VOTES = "no votes yet"
SAT_LINEAGE = "\n      continued from `{parent}` by run `{run_id}` on set `{set_id}`"
SAT_TAG_CURRENT = " _(current)_"
SAT_TAG_CANDIDATE = " _(canary)_"
SAT_NONE = "_No model has answered yet._"
COST_PER_ANSWER = "${cost:.5f} per answer (${total:.2f} in all)"
COST_UNPRICED = "{count} answers unpriced (no known price)"
COST_NONE = "no answers"
COST_HEADER = "*Cost of answers* (prompt + completion tokens at the model's dated price):"
COST_MODEL = "• `{model}`: {cost}"
COST_DAYS = "• per day: {days}"
COST_DAY = "{day} ${cost:.2f}"
COST_CHANNELS = "• per channel: {channels}"
COST_CHANNEL = "<#{channel}> ${cost:.2f} ({answers})"
RUN_COST = (
    "*Training cost of `{run_id}`:* estimated {estimate} before the run, {actual} after "
    "({tokens:,} trained tokens)"
)
RUN_COST_UNKNOWN = "unknown"
CANARY_NONE = "*Canary:* none going."
CANARY_PROGRESS = (
    "*Canary:* `{candidate}` answers {share:.0%} of new threads against `{incumbent}` since "
    "{since} UTC.\n• candidate: {cu}/{cv} :+1: ({crate}), incumbent: {iu}/{iv} :+1: ({irate}); "
    "{min_votes} votes each decide, at the latest {deadline} UTC{test}"
)
CANARY_TEST = (
    "\n• now: difference {diff:+.1%}, z = {z:.2f}, one-sided p = {p:.3f} "
    "(not worse by more than {margin:.0%} at {confidence:.0%} confidence)"
)
CANARY_DECIDING = "\n• _a decision ({outcome}) is being applied_"
CANARY_ASKED = "Ending the canary of `{candidate}`: {outcome}. The decision and its numbers follow in the run's thread."
CANARY_STARTED = (
    ":hatching_chick: `{model}` passed the gate ({cand} against {cur} for `{current}`, "
    "{scorer}) and now answers {share:.0%} of new threads as a canary. It is promoted if "
    "its up-rate is not worse than `{current}`'s by more than {margin:.0%} at {confidence:.0%} "
    "confidence once each has {min_votes} votes, and rolled back otherwise (or after "
    "{hours:g} h)."
)
CANARY_DECIDED = (
    "{icon} Canary of `{candidate}` against `{incumbent}` ended: *{outcome}* ({reason}, "
    "decided by {by}).\nCandidate {cu}/{cv} :+1:, incumbent {iu}/{iv} :+1:{test}"
)
CANARY_DECIDED_TEST = (
    "; z = {z:.2f}, one-sided p = {p:.4f} (margin {margin:.0%}, confidence {confidence:.0%})"
)
CANARY_BY_RULE = "the canary's rule"
CANARY_OUTCOMES = {"promote": "promoted", "rollback": "rolled back"}
EVAL_SIGN = "Per question: {wins} better, {losses} worse, {ties} tied (sign test p = {p:.3f})."
HOME_ADMIN_HEADER = "Learning (admins)"
CHART_TITLE = "Up-rate per model version per day"
CHART_ALT = "Line chart of the daily share of thumbs-up for each model version"
REVIEW_GOLDEN = "Add to golden set"
REVIEW_GOLDEN_DONE = "Added to the golden set: every candidate model is now asked this question."
REVIEW_GOLDEN_ALREADY = "That answer is already in the golden set."
