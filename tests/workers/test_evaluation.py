"""The evaluation gate with the real ``openai`` client and the OpenAI emulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from core.errors import ConfigError
from core.settings import Scorer, Settings, load_behaviour
from tests.emulators.openai import OpenAIEmulator
from workers import evaluation
from workers.evaluation import EvalItem

CURRENT = "gpt-4o-mini-2024-07-18"
CANDIDATE = "ft:gpt-4o-mini-2024-07-18:org:tuneloop:abc"
SYSTEM = {"role": "system", "content": "You are tuneloop."}


@pytest.fixture
def client(openai_api: OpenAIEmulator) -> OpenAI:
    openai_api.add_model(CANDIDATE)
    return OpenAI(api_key="sk-test", base_url=openai_api.url, max_retries=0)


def settings_with(scorer: Scorer = Scorer.NORMALIZED_MATCH, tolerance: float = 0.02) -> Settings:
    base = load_behaviour()
    return base.model_copy(
        update={
            "evaluation": base.evaluation.model_copy(
                update={"scorer": scorer, "tolerance": tolerance}
            )
        }
    )


def items(n: int = 4) -> list[EvalItem]:
    out = [
        EvalItem(
            "validation",
            [SYSTEM, {"role": "user", "content": f"Question {i}?"}],
            f"The answer is {i}.",
        )
        for i in range(n)
    ]
    out.append(EvalItem("off_topic", [SYSTEM, {"role": "user", "content": "Stock tips?"}], None))
    return out


def answers(candidate_right: int, *, declines: bool = True) -> Any:
    """Both models answer; the candidate gets only the first ``candidate_right`` right."""

    def answer(body: dict[str, Any]) -> str:
        question = body["messages"][-1]["content"]
        if question == "Stock tips?":
            return "Sorry, I can't help with that." if declines else "Buy everything."
        n = int(question.split()[1].rstrip("?"))
        if body["model"] == CANDIDATE and n >= candidate_right:
            return "No idea."
        return f"the answer is {n}"

    return answer


def test_an_equally_good_candidate_passes(client: OpenAI, openai_api: OpenAIEmulator) -> None:
    openai_api.answer_fn = answers(candidate_right=4)
    report = evaluation.evaluate(
        client, settings_with(), candidate=CANDIDATE, current=CURRENT, items=items()
    )
    assert report.passed
    assert report.candidate.score == report.current.score == 1.0
    assert report.candidate.by_kind == {"validation": 1.0, "off_topic": 1.0}
    assert report.items == 5 and report.examples == []


def test_a_worse_candidate_is_refused_with_examples_of_where(
    client: OpenAI, openai_api: OpenAIEmulator
) -> None:
    openai_api.answer_fn = answers(candidate_right=2)
    report = evaluation.evaluate(
        client, settings_with(), candidate=CANDIDATE, current=CURRENT, items=items()
    )
    assert not report.passed
    assert (report.candidate.score, report.current.score) == (0.6, 1.0)
    assert [e["candidate"] for e in report.examples] == ["No idea.", "No idea."]
    assert evaluation.EvalReport.from_json(report.to_json()) == report


def test_the_tolerance_lets_a_slightly_worse_candidate_through(
    client: OpenAI, openai_api: OpenAIEmulator
) -> None:
    openai_api.answer_fn = answers(candidate_right=3)
    strict = evaluation.evaluate(
        client, settings_with(tolerance=0.1), candidate=CANDIDATE, current=CURRENT, items=items()
    )
    lenient = evaluation.evaluate(
        client, settings_with(tolerance=0.2), candidate=CANDIDATE, current=CURRENT, items=items()
    )
    assert (strict.passed, lenient.passed) == (False, True)


def test_embedding_and_judge_scorers(client: OpenAI, openai_api: OpenAIEmulator) -> None:
    openai_api.answer_fn = answers(candidate_right=4)
    embedded = evaluation.evaluate(
        client,
        settings_with(Scorer.EMBEDDING),
        candidate=CANDIDATE,
        current=CURRENT,
        items=items(2),
    )
    assert embedded.passed and embedded.candidate.by_kind["validation"] > 0.99

    def judge(body: dict[str, Any]) -> str:
        if body["messages"][0]["content"] == evaluation.JUDGE_PROMPT:
            return "7" if CANDIDATE in str(body) or "No idea" in str(body) else "9"
        if body["messages"][0]["content"] == evaluation.DECLINE_JUDGE_PROMPT:
            return "1"
        return answers(candidate_right=0)(body)

    openai_api.answer_fn = judge
    judged = evaluation.evaluate(
        client, settings_with(Scorer.JUDGE), candidate=CANDIDATE, current=CURRENT, items=items(2)
    )
    assert judged.candidate.by_kind == {"validation": 0.7, "off_topic": 1.0}
    assert judged.current.by_kind == {"validation": 0.9, "off_topic": 1.0}
    assert not judged.passed


def test_no_questions_means_no_blind_promotion(client: OpenAI) -> None:
    report = evaluation.evaluate(
        client, settings_with(), candidate=CANDIDATE, current=CURRENT, items=[]
    )
    assert not report.passed


def test_the_shipped_golden_file_loads_and_bad_files_are_refused(tmp_path: Path) -> None:
    golden = evaluation.load_golden("config/eval.yaml", "You are tuneloop.")
    kinds = {item.kind for item in golden.items}
    assert kinds == {"golden", "off_topic"}
    assert all(item.messages[0]["content"] == "You are tuneloop." for item in golden.items)
    assert "i can't help" in golden.decline_markers

    bad = tmp_path / "eval.yaml"
    bad.write_text("golden:\n  - question: only a question\n")
    with pytest.raises(ConfigError, match="golden\\[0\\] needs"):
        evaluation.load_golden(bad, "s")
    with pytest.raises(ConfigError, match="does not exist"):
        evaluation.load_golden(tmp_path / "missing.yaml", "s")


def test_held_out_lines_become_questions() -> None:
    chat = {
        "messages": [
            SYSTEM,
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "weight": 0},
            {"role": "user", "content": "Where?"},
            {"role": "assistant", "content": "Here."},
        ]
    }
    pair = {
        "input": {"messages": [SYSTEM, {"role": "user", "content": "Who?"}]},
        "preferred_output": [{"role": "assistant", "content": "Ann."}],
        "non_preferred_output": [{"role": "assistant", "content": "Bob."}],
    }
    first, second = evaluation.validation_items([chat, pair])
    assert first.expected == "Here." and first.question == "Where?"
    assert {"weight"} & set().union(*first.messages) == set()
    assert second.expected == "Ann." and second.question == "Who?"


def test_normalised_match_ignores_case_punctuation_and_articles() -> None:
    assert evaluation.normalize_text("The answer, is: 42!") == evaluation.normalize_text(
        "answer is 42"
    )
    assert evaluation.declined("Sorry — I can't help with that.", ("i can't help",))


def test_the_report_counts_wins_losses_and_ties_with_a_sign_test(
    client: OpenAI, openai_api: OpenAIEmulator
) -> None:
    openai_api.answer_fn = answers(candidate_right=14)
    report = evaluation.evaluate(
        client,
        settings_with(tolerance=0.5),
        candidate=CANDIDATE,
        current=CURRENT,
        items=items(20),
    )
    # 14 right for both (ties) + the decline (tie); 6 lost: p = 2 / 2^6 = 0.03125
    assert (report.wins, report.losses, report.ties) == (0, 6, 15)
    assert report.sign_p == pytest.approx(0.03125)
    assert report.candidate.score >= report.current.score - 0.5
    assert not report.passed, "within the tolerance, but significantly worse per question"


def test_golden_examples_marked_by_admins_are_asked_too(redis_conn: Any) -> None:
    assert evaluation.mark_golden(
        redis_conn,
        answer_id="C1-1",
        question="Where is the VPN guide?",
        expected="On the wiki.",
        by="UA",
    )
    assert not evaluation.mark_golden(
        redis_conn, answer_id="C1-1", question="Where is the VPN guide?", expected="x", by="UA"
    )
    got = evaluation.stored_golden(redis_conn, "You are tuneloop.")
    assert got == [
        EvalItem(
            evaluation.GOLDEN,
            [
                {"role": "system", "content": "You are tuneloop."},
                {"role": "user", "content": "Where is the VPN guide?"},
            ],
            "On the wiki.",
        )
    ]


def test_a_judge_model_makes_the_judge_the_scorer() -> None:
    base = settings_with()
    judged = base.model_copy(
        update={"evaluation": base.evaluation.model_copy(update={"judge_model": "gpt-4.1"})}
    )
    assert evaluation.scorer_of(base) is Scorer.NORMALIZED_MATCH
    assert evaluation.scorer_of(judged) is Scorer.JUDGE
