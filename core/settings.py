"""Settings: behaviour from ``config/settings.yaml``, secrets and endpoints from the environment.

Read once at start-up into a frozen object that is passed explicitly to whatever needs
it. A missing secret or a bad value raises :class:`ConfigError` with one line that names
the key and says what to do, so the process can stop with exactly that line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = ROOT / "config" / "settings.yaml"
MANIFEST_HINT = (
    "create the Slack app from config/slack_manifest.yaml "
    "(api.slack.com/apps > Create New App > From a manifest) and copy it from the app's settings"
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalMode(str, Enum):
    """Who turns a rated answer into an approved training example."""

    ADMIN = "admin"
    AUTO = "auto"
    BOTH = "both"


class TrainerBackend(str, Enum):
    """Where fine-tuning runs."""

    OPENAI = "openai"
    LOCAL = "local"


class TrainingMethod(str, Enum):
    """Supervised on approved answers, or preference (DPO) on corrections."""

    SUPERVISED = "supervised"
    DPO = "dpo"


class Scorer(str, Enum):
    """How the evaluation gate scores an answer against the expected one."""

    NORMALIZED_MATCH = "normalized_match"
    EMBEDDING = "embedding"
    JUDGE = "judge"


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ModelSettings(_Frozen):
    base_model: str = Field(min_length=1)
    system_prompt: str = Field(min_length=1)
    context_token_budget: PositiveInt = 6000
    max_answer_tokens: PositiveInt = 800
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.3
    request_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3


class SlackSettings(_Frozen):
    admins: tuple[str, ...] = ()
    workspace_admins_are_admins: bool = False
    stream_buffer_chars: PositiveInt = 200
    max_message_chars: Annotated[int, Field(ge=500, le=12000)] = 11000
    fallback_update_interval_s: Annotated[float, Field(ge=0.0)] = 1.0
    stream_start_after_s: Annotated[float, Field(ge=0.0)] = 0.25
    thinking_status_after_s: Annotated[float, Field(ge=0.0)] = 0.3
    history_messages: PositiveInt = 50
    inline_answers: Annotated[int, Field(ge=0, le=10_000)] = 256  # coroutines, not threads
    recover_after_s: Annotated[float, Field(ge=3.0)] = 30.0


class SuggestedPrompt(_Frozen):
    """One suggested prompt of the agent's Messages tab: its button title and the
    message it sends."""

    title: str = Field(min_length=1, max_length=75)
    message: str = Field(min_length=1, max_length=2000)


class AgentSettings(_Frozen):
    """The agent experience: the greeting and the suggested prompts (Slack shows at
    most four), and how long the user's active view is remembered."""

    greeting: str = Field(
        default="Hi! Ask me anything. Rate my answers with the thumbs to help me improve.",
        min_length=1,
    )
    prompts_title: str = Field(default="Try asking", max_length=75)
    suggested_prompts: tuple[SuggestedPrompt, ...] = Field(default=(), max_length=4)
    view_context_ttl_s: PositiveInt = 3600


class FileSettings(_Frozen):
    """Files attached to questions: what is read, up to which size, and which models
    are given images (models not listed get a note that images were not read)."""

    enabled: bool = True
    max_files: Annotated[int, Field(ge=0, le=20)] = 5
    max_file_bytes: PositiveInt = 5_000_000
    max_image_bytes: PositiveInt = 4_000_000
    max_prompt_tokens: PositiveInt = 3000  # at most half the context budget is used
    vision_models: tuple[str, ...] = ("gpt-4o", "gpt-4.1", "gpt-5", "o3", "o4")


class ApprovalSettings(_Frozen):
    mode: ApprovalMode = ApprovalMode.BOTH
    asker_upvote_approves: bool = True
    min_upvotes: PositiveInt = 2


class RetentionSettings(_Frozen):
    unrated_days: PositiveInt = 30
    event_dedup_s: PositiveInt = 3600


class PiiSettings(_Frozen):
    emails: bool = True
    phones: bool = True
    cards: bool = True
    slack_mentions: bool = True


class OpenAITrainerSettings(_Frozen):
    n_epochs: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    learning_rate_multiplier: Annotated[float, Field(gt=0)] | None = None
    dpo_beta: Annotated[float, Field(gt=0)] | None = None


class LocalTrainerSettings(_Frozen):
    base_model: str = ""
    adapters_dir: str = "adapters"
    lora_r: PositiveInt = 16
    lora_alpha: PositiveInt = 32
    lora_dropout: Fraction = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    epochs: PositiveInt = 2
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    batch_size: PositiveInt = 4
    max_seq_length: PositiveInt = 2048
    bf16: bool | None = None
    packing: bool = True
    serving_urls: tuple[str, ...] = ()
    """The /v1 URL of every vLLM replica; adapters are loaded into each one before the
    bot's model moves. Empty: the one server at OPENAI_BASE_URL."""


class TrainingSettings(_Frozen):
    backend: TrainerBackend = TrainerBackend.OPENAI
    method: TrainingMethod = TrainingMethod.SUPERVISED
    min_examples: PositiveInt = 10
    validation_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    replay_fraction: Annotated[float, Field(ge=0.0, le=5.0)] = 0.2
    small_increment_ratio: Fraction = 0.25
    lr_reduction_factor: Annotated[float, Field(ge=1.0)] = 3.0
    suffix: str = Field(default="tuneloop", min_length=1, max_length=64)
    seed: int = 42
    max_example_tokens: PositiveInt = 65536
    poll_interval_s: Annotated[float, Field(gt=0)] = 30.0
    progress_post_interval_s: Annotated[float, Field(ge=0)] = 60.0
    pii: PiiSettings = PiiSettings()
    openai: OpenAITrainerSettings = OpenAITrainerSettings()
    local: LocalTrainerSettings = LocalTrainerSettings()
    # --- learning loop (workers/trainset.py, workers/build.py, core/run_control.py) ---
    replay_max: Annotated[int, Field(ge=0)] = 2000
    max_validation_examples: Annotated[int, Field(ge=0)] = 500
    sets_dir: str = Field(default="data/trainsets", min_length=1)
    exact_token_examples: Annotated[int, Field(ge=0)] = 2000
    token_sample_every: PositiveInt = 25
    stale_run_s: PositiveInt = 900


class EvaluationSettings(_Frozen):
    scorer: Scorer = Scorer.NORMALIZED_MATCH
    tolerance: Fraction = 0.02
    eval_file: str = "config/eval.yaml"
    judge_model: str = ""
    embedding_model: str = "text-embedding-3-small"
    max_examples: PositiveInt = 200
    # --- learning loop (workers/evaluation.py) ---
    parallel_requests: Annotated[int, Field(ge=1, le=32)] = 4


class CanarySettings(_Frozen):
    """A candidate that passes the offline gate answers a share of new threads first;
    votes decide (see core/canary.py)."""

    enabled: bool = False
    share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    min_votes: PositiveInt = 30
    max_duration_h: Annotated[float, Field(gt=0)] = 72.0
    margin: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.05
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.9


class Secrets(_Frozen):
    """Values that come only from the environment; ``repr`` never shows them."""

    slack_bot_token: str = Field(repr=False)
    slack_signing_secret: str = Field(repr=False)
    slack_app_token: str | None = Field(default=None, repr=False)
    openai_api_key: str = Field(repr=False)


class Endpoints(_Frozen):
    openai_base_url: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    port: Annotated[int, Field(gt=0, lt=65536)] = 3000


class Settings(_Frozen):
    """Everything the service reads at start-up, validated."""

    model: ModelSettings
    slack: SlackSettings = SlackSettings()
    agent: AgentSettings = AgentSettings()
    files: FileSettings = FileSettings()
    approval: ApprovalSettings = ApprovalSettings()
    retention: RetentionSettings = RetentionSettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    canary: CanarySettings = CanarySettings()
    secrets: Secrets
    endpoints: Endpoints = Endpoints()
    config_file: str

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when an app-level token is given, HTTP mode otherwise."""
        return bool(self.secrets.slack_app_token)


_REQUIRED_SECRETS: dict[str, str] = {
    "SLACK_BOT_TOKEN": "the bot token (xoxb-...): " + MANIFEST_HINT + ", OAuth & Permissions",
    "SLACK_SIGNING_SECRET": "the signing secret: " + MANIFEST_HINT + ", Basic Information",
    "OPENAI_API_KEY": "an API key of OpenAI or of the OpenAI-compatible server at OPENAI_BASE_URL",
}


def _secrets(env: Mapping[str, str]) -> dict[str, Any]:
    for name, what in _REQUIRED_SECRETS.items():
        if not env.get(name, "").strip():
            raise ConfigError(f"{name} is not set: export {what}")
    token = env["SLACK_BOT_TOKEN"].strip()
    if not token.startswith("xoxb-"):
        raise ConfigError(
            "SLACK_BOT_TOKEN must be a bot token starting with xoxb-: " + MANIFEST_HINT
        )
    app_token = env.get("SLACK_APP_TOKEN", "").strip() or None
    if app_token and not app_token.startswith("xapp-"):
        raise ConfigError(
            "SLACK_APP_TOKEN must be an app-level token starting with xapp- "
            "(Basic Information > App-Level Tokens, scope connections:write), or unset for HTTP mode"
        )
    return {
        "slack_bot_token": token,
        "slack_signing_secret": env["SLACK_SIGNING_SECRET"].strip(),
        "slack_app_token": app_token,
        "openai_api_key": env["OPENAI_API_KEY"].strip(),
    }


def _endpoints(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if env.get("OPENAI_BASE_URL", "").strip():
        out["openai_base_url"] = env["OPENAI_BASE_URL"].strip()
    if env.get("SLACK_API_URL", "").strip():
        url = env["SLACK_API_URL"].strip()
        out["slack_api_url"] = url if url.endswith("/") else url + "/"
    if env.get("REDIS_URL", "").strip():
        out["redis_url"] = env["REDIS_URL"].strip()
    if env.get("PORT", "").strip():
        port = env["PORT"].strip()
        if not port.isdigit():
            raise ConfigError(f"PORT must be a number, got {port!r}")
        out["port"] = int(port)
    return out


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{source}: {where}: {first['msg']}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings once; raise ConfigError naming the first bad key."""
    env = os.environ if env is None else env
    path = Path(env.get("CONFIG_FILE") or DEFAULT_CONFIG_FILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"CONFIG_FILE {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of settings")
    for forbidden in ("secrets", "endpoints", "config_file"):
        if forbidden in raw:
            raise ConfigError(
                f"{path}: {forbidden} may not be set in YAML: secrets and endpoints come "
                "from the environment only"
            )
    data = {
        **raw,
        "secrets": _secrets(env),
        "endpoints": _endpoints(env),
        "config_file": str(path),
    }
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def load_behaviour(path: str | Path | None = None) -> Settings:
    """Settings for offline tools (dataset CLI, benchmarks) that need no secrets.

    The behaviour part is validated exactly as the service does; secrets are blank.
    """
    env = {
        "CONFIG_FILE": str(path or os.environ.get("CONFIG_FILE") or DEFAULT_CONFIG_FILE),
        "SLACK_BOT_TOKEN": "xoxb-offline",
        "SLACK_SIGNING_SECRET": "offline",
        "OPENAI_API_KEY": "offline",
    }
    return load_settings(env)
