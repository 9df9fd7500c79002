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

UNPOSTED_POSTING = f"{PREFIX}unposted:posting"
"""HASH: answer id -> owner: the web process posting an unposted answer right now (its
answer stays in UNPOSTED until posted; another process takes it once the owner dies)."""


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
APPROVED_RESERVOIR = f"{PREFIX}approved:reservoir"
"""HASH: slot number -> stream id of a uniform sample of the approved log (the replay
pool), updated in the same script that appends an example; ids only, so an example
deleted from the log (forget-me) drops out of the sample with it."""
APPROVED_RESERVOIR_SEEN = f"{PREFIX}approved:reservoir:seen"
"""STRING counter: examples offered to the reservoir so far (the sample's population)."""
ADMIN_LOG = f"{PREFIX}audit"
"""STREAM: who did what, when (every admin action)."""


def event_seen(event_id: str) -> str:
    """STRING flag: a Slack event id already handled (Slack redelivers on slow acks)."""
    return f"{PREFIX}event:{event_id}"


def command_trigger(trigger_id: str) -> str:
    """STRING flag with a TTL: a slash command's trigger id already run (replays run once)."""
    return f"{PREFIX}trigger:{trigger_id}"


# --- Local trainer (self-hosted LoRA, workers/training/local.py) ---------------------
LOCAL_ADAPTER_SEQ = f"{PREFIX}local:adapter_seq"
"""STRING counter: the last number given to a local adapter's model id (``<suffix>-<n>``)."""


def local_job(job_id: str) -> str:
    """HASH: one local training job (status, model id, parent, paths, result, error, times)."""
    return f"{PREFIX}local:job:{job_id}"


def local_job_events(job_id: str) -> str:
    """LIST: the job's progress events as JSON, oldest first."""
    return f"{PREFIX}local:job:{job_id}:events"


def local_run_job(run_id: str) -> str:
    """STRING: the local training job a training run started (how a run whose worker
    died finds its GPU job again instead of starting another)."""
    return f"{PREFIX}local:run:{run_id}"


def local_job_cancel(job_id: str) -> str:
    """STRING flag: cancellation asked for; the training callback stops at the next step."""
    return f"{PREFIX}local:job:{job_id}:cancel"


# --- Training runs (core/runs.py, core/run_control.py, workers/trainset.py) --------
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


RUN_EVENTS = f"{PREFIX}run:events"
"""STREAM: what happened to training runs (field "kind", plus "run_id", a reply's
"channel", "user", "reply", "values", or an export's "key", "channel", "user", "values"),
for the web processes to post to Slack."""
RUN_EVENTS_GROUP = "reporters"
"""The consumer group of ``RUN_EVENTS``: an entry is acknowledged once it was posted."""


def export(set_id: str, export_id: str) -> str:
    """HASH with a TTL: one export of a training set, file name -> gzipped bytes, stored by
    the training worker (where the sets are) for a web process to upload to the admin's
    DM; deleted once uploaded (core/exports.py)."""
    return f"{PREFIX}export:{set_id}:{export_id}"


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


# --- Agent experience -----------------------------------------------------------------
def viewing(owner_id: str) -> str:
    """STRING (with TTL): JSON list of what a user is looking at in Slack, from
    app_context_changed / assistant_thread_context_changed, under their user id and
    their DM with the app (whichever the event names)."""
    return f"{PREFIX}viewing:{owner_id}"


def greeted(user_id: str) -> str:
    """STRING: set once the Messages tab greeted this user, so reopening it does not
    post the greeting again."""
    return f"{PREFIX}greeted:{user_id}"


def titled(channel_id: str, thread_ts: str) -> str:
    """STRING (with TTL): set once a Messages-tab thread got its title from its first
    question."""
    return f"{PREFIX}titled:{channel_id}:{thread_ts}"


# --- Satisfaction per model version (core/satisfaction.py) -----------------------------
SAT_MODELS = f"{PREFIX}sat:models"
"""ZSET: every model that has answered, scored by the time of its first answer."""


def sat_model(model: str) -> str:
    """HASH: one model's totals: answers, up, down, corrections, prompt/completion tokens,
    cost (USD) and unpriced (answers of a model without a known price)."""
    return f"{PREFIX}sat:model:{model}"


def sat_channels(model: str) -> str:
    """HASH: "<channel id>|<total>" -> value: the same totals per channel."""
    return f"{PREFIX}sat:channels:{model}"


def sat_days(model: str) -> str:
    """HASH: "<YYYY-MM-DD>|<total>" -> value: the same totals per UTC day of the answer."""
    return f"{PREFIX}sat:days:{model}"


def sat_counted(answer_id: str) -> str:
    """HASH: what of one answer is already in the totals ("answer", "v:<user>" -> vote,
    "c:<user>"), so recording twice never counts twice and a changed vote moves counts."""
    return f"{PREFIX}sat:counted:{answer_id}"


# --- Canary rollout (core/canary.py) ---------------------------------------------------------
CANARY = f"{PREFIX}canary"
"""HASH: the canary going (id, candidate, incumbent, share, start, baseline counts, state);
absent when none is."""
CANARY_LOCK = f"{PREFIX}canary:lock"
"""STRING with a TTL: a process is deciding the canary (SET NX), so it is decided once."""
CANARY_HISTORY = f"{PREFIX}canary:history"
"""LIST (newest first): JSON record of every canary decision with its numbers."""


def thread_model(channel_id: str, thread_ts: str) -> str:
    """STRING with a TTL: the model a thread is answered with, so it never switches."""
    return f"{PREFIX}thread_model:{channel_id}:{thread_ts}"


GOLDEN = f"{PREFIX}golden"
"""HASH: answer id -> JSON {"question", "expected", "by", "at"}: golden examples admins
marked in /finetune review; the evaluation gate asks them with those of eval.yaml."""
SAT_CHART = f"{PREFIX}sat:chart"
"""HASH: "digest" -> hash of the data drawn, "file_id" -> the Slack file of the up-rate
chart, so App Home uploads a new chart only when the numbers changed."""
