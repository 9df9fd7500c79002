"""Every Redis key and RQ queue name tuneloop uses, in one place.

Keys share the ``tl:`` prefix so a Redis shared with other programs stays readable
and ``redis-cli --scan --pattern 'tl:*'`` lists everything we own. RQ keeps its own
``rq:*`` keys; we only name its queues here.
"""

PREFIX = "tl:"

# --- RQ queues (the Procfile's worker lines must name exactly these) -----------------
QUEUE_ANSWERS = "answers"
"""Answering Slack messages: short, latency-sensitive jobs."""
QUEUE_TRAINING = "training"
"""Building training sets, starting and following fine-tuning jobs, evaluation."""
QUEUE_GPU = "gpu"
"""Self-hosted LoRA training runs, served by a worker on a machine with a GPU."""
ALL_QUEUES = (QUEUE_ANSWERS, QUEUE_TRAINING, QUEUE_GPU)


# --- Answers and their ratings -------------------------------------------------------
def answer(answer_id: str) -> str:
    """HASH: one answer's transcript (see README, data model)."""
    return f"{PREFIX}answer:{answer_id}"


def votes(answer_id: str) -> str:
    """HASH: Slack user id -> "up" | "down" for one answer."""
    return f"{PREFIX}votes:{answer_id}"


def vote_sources(answer_id: str) -> str:
    """HASH: Slack user id -> "button" | "reaction", how that user's vote was cast."""
    return f"{PREFIX}vote_src:{answer_id}"


def corrections(answer_id: str) -> str:
    """HASH: Slack user id -> JSON {"text", "at"}: what the answer should have said."""
    return f"{PREFIX}corrections:{answer_id}"


MESSAGE_ANSWER_PREFIX = f"{PREFIX}msg:"


def message_answer(channel_id: str, message_ts: str) -> str:
    """STRING: the answer id a posted Slack message belongs to (long answers span several)."""
    return f"{MESSAGE_ANSWER_PREFIX}{channel_id}:{message_ts}"


def bot_thread(channel_id: str, thread_ts: str) -> str:
    """STRING flag: the bot has answered in this thread, so follow-ups need no mention."""
    return f"{PREFIX}thread:{channel_id}:{thread_ts}"


def claimed_message(channel_id: str, message_ts: str) -> str:
    """STRING flag: this user message has been taken for answering (one answer only)."""
    return f"{PREFIX}claimed:{channel_id}:{message_ts}"


INFLIGHT = f"{PREFIX}inflight"
"""HASH: answer id -> JSON question + owner: answers a web process is writing right now.
An entry whose owner stopped beating is queued again for the answer workers."""

UNPOSTED = f"{PREFIX}unposted"
"""HASH: answer id -> JSON {channel_id, thread_ts, text}: answers stored while Slack kept
refusing them (429), posted by a web process once Slack takes them again."""


def answer_owner(owner: str) -> str:
    """STRING with a TTL: a web process that writes answers is alive (its heartbeat)."""
    return f"{PREFIX}owner:{owner}"


def user_answers(user_id: str) -> str:
    """SET: answer ids a user asked or voted on (for deleting a user's data)."""
    return f"{PREFIX}user:{user_id}:answers"


RATED = f"{PREFIX}rated"
"""ZSET: answer ids with at least one vote, scored by first-vote time (review queue)."""
REVIEWED = f"{PREFIX}reviewed"
"""HASH: answer id -> JSON {"decision", "by", "at"} once an admin or the policy decided."""
STATS_ANSWERS = f"{PREFIX}stats:answers"
"""ZSET: answer ids scored by creation time, trimmed to the stats window."""
STATS_VOTES = f"{PREFIX}stats:votes"
"""ZSET: "<answer id>:<user id>" scored by vote time, trimmed to the stats window."""

# --- Models --------------------------------------------------------------------------
CURRENT_MODEL = f"{PREFIX}model:current"
"""STRING: the model id the bot answers with; absent means the configured base model."""
MODEL_HISTORY = f"{PREFIX}model:history"
"""LIST (newest first): JSON records of every promotion and rollback."""

# --- Approved examples and training runs ---------------------------------------------
APPROVED_LOG = f"{PREFIX}approved"
"""STREAM: append-only log of approved training examples (field "example": JSON)."""
APPROVED_HASHES = f"{PREFIX}approved:hashes"
"""SET: content hashes of every approved example, so the same example is logged once."""
APPROVED_CURSOR = f"{PREFIX}approved:cursor"
"""STRING: stream id of the last approved example consumed by a started training run."""
ADMIN_LOG = f"{PREFIX}audit"
"""STREAM: who did what, when (every admin action)."""


def event_seen(event_id: str) -> str:
    """STRING flag: a Slack event id already handled (Slack redelivers on slow acks)."""
    return f"{PREFIX}event:{event_id}"


# --- Local trainer (self-hosted LoRA, workers/training/local.py) ---------------------
LOCAL_ADAPTER_SEQ = f"{PREFIX}local:adapter_seq"
"""STRING counter: the last number given to a local adapter's model id (``<suffix>-<n>``)."""


def local_job(job_id: str) -> str:
    """HASH: one local training job (status, model id, parent, paths, result, error, times)."""
    return f"{PREFIX}local:job:{job_id}"


def local_job_events(job_id: str) -> str:
    """LIST: the job's progress events as JSON, oldest first."""
    return f"{PREFIX}local:job:{job_id}:events"


def local_job_cancel(job_id: str) -> str:
    """STRING flag: cancellation asked for; the training callback stops at the next step."""
    return f"{PREFIX}local:job:{job_id}:cancel"


# --- Training runs (workers/loop.py, workers/trainset.py, core/approval.py) -------
RUN_LOCK = f"{PREFIX}run:lock"
"""STRING: id of the training run in progress (SET NX); absent when none is going."""
SUPERVISE_LOCK = f"{PREFIX}run:supervise"
"""STRING with a TTL: a web process is checking the run going (one per period)."""
RUNS = f"{PREFIX}runs"
"""ZSET: every training run id (dry runs included), scored by creation time."""


def run(run_id: str) -> str:
    """HASH: one training run (status, set, job, models, admin, thread, cursor range...)."""
    return f"{PREFIX}run:{run_id}"


def run_metrics(run_id: str) -> str:
    """LIST: the run's metric points as JSON (step, losses, accuracy), oldest first."""
    return f"{PREFIX}run:{run_id}:metrics"


TRAINSET_SEQ = f"{PREFIX}trainset:seq"
"""STRING counter: the last training-set version number given (set ids ``set-0007``)."""
TRAINSETS = f"{PREFIX}trainsets"
"""ZSET: training-set ids scored by creation time."""


def trainset(set_id: str) -> str:
    """STRING: a built training set's manifest as JSON (counts, tokens, files, cursor range)."""
    return f"{PREFIX}trainset:{set_id}"


def trainset_seen(set_id: str) -> str:
    """SET (temporary): content hashes already taken while building one set (de-duplication)."""
    return f"{PREFIX}trainset:{set_id}:seen"


HELDOUT = f"{PREFIX}trainset:heldout"
"""SET: normalised-content hashes of examples a started run held out for validation;
they are never replayed into a later training file."""
MODELS = f"{PREFIX}models"
"""HASH: model id -> JSON {run, set, job, parent, trained examples, metrics} of every
model a training run produced (what ``/finetune promote`` may switch to)."""

# --- Operations -------------------------------------------------------------------------
METRICS = f"{PREFIX}metrics"
"""HASH: "<metric>|<label>=<value>..." -> count, shared by every process (see core.metrics)."""
