"""Settings: validated once, one clear line naming the key on any problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from core.settings import ApprovalMode, load_settings

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-1",
    "SLACK_SIGNING_SECRET": "s3cret",
    "OPENAI_API_KEY": "sk-1",
}


def _env(tmp_path: Path, yaml_text: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(SECRETS, **extra)
    if yaml_text is not None:
        path = tmp_path / "settings.yaml"
        path.write_text(yaml_text)
        env["CONFIG_FILE"] = str(path)
    return env


def test_the_shipped_settings_load_with_secrets_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(_env(tmp_path, PORT="8080", SLACK_API_URL="http://127.0.0.1:9/api"))
    assert settings.model.base_model
    assert settings.approval.mode is ApprovalMode.BOTH
    assert settings.endpoints.port == 8080
    assert settings.endpoints.slack_api_url == "http://127.0.0.1:9/api/"
    assert not settings.socket_mode
    assert "s3cret" not in repr(settings) and "sk-1" not in repr(settings)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_names_the_variable_and_what_to_do(tmp_path: Path, missing: str) -> None:
    env = _env(tmp_path)
    del env[missing]
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(f"{missing} is not set")
    assert "\n" not in message
    if missing.startswith("SLACK"):
        assert "config/slack_manifest.yaml" in message


def test_socket_mode_needs_an_app_level_token(tmp_path: Path) -> None:
    assert load_settings(_env(tmp_path, SLACK_APP_TOKEN="xapp-1")).socket_mode
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN must be an app-level token"):
        load_settings(_env(tmp_path, SLACK_APP_TOKEN="xoxb-wrong"))


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("model: {base_model: m, system_prompt: s, temperature: 5}\n", "model.temperature"),
        (
            "model: {base_model: m, system_prompt: s}\napproval: {mode: sometimes}\n",
            "approval.mode",
        ),
        ("model: {base_model: m, system_prompt: s, colour: red}\n", "model.colour"),
        ("model: {system_prompt: s}\n", "model.base_model"),
        ("model: {base_model: m, system_prompt: s}\nsecrets: {openai_api_key: x}\n", "secrets"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_value_names_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_env(tmp_path, yaml_text))
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PORT must be a number"):
        load_settings(_env(tmp_path, PORT="eighty"))


def test_the_bot_process_stops_with_one_line_on_bad_settings(tmp_path: Path) -> None:
    import subprocess
    import sys

    from core.settings import ROOT

    env = {"PATH": "/usr/bin:/bin", "SLACK_SIGNING_SECRET": "x", "OPENAI_API_KEY": "y"}
    done = subprocess.run(
        [sys.executable, "-m", "bot"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("tuneloop: SLACK_BOT_TOKEN is not set")
