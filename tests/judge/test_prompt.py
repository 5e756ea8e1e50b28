"""The judge prompt and the strict validation of (untrusted) answers."""

import json

import pytest

from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.judge.prompt import (
    MAX_HISTORY_ITEMS,
    MAX_ITEM_CHARS,
    MalformedAnswer,
    build_messages,
    parse_answer,
)

VALID = {"profile": 0.9, "future": 0, "novelty": 1, "rationale": "fits the routine"}


def test_valid_answer_and_fenced_answer():
    judgement = parse_answer(json.dumps(VALID))
    assert judgement.scores == tuple(float(VALID[a]) for a in ASPECTS)
    assert judgement.rationale == "fits the routine"
    fenced = "```json\n" + json.dumps(VALID, indent=1) + "\n```"
    assert parse_answer(fenced) == judgement
    assert parse_answer("  ```\n" + json.dumps(VALID) + "\n```\n") == judgement


@pytest.mark.parametrize(
    "content, reason",
    [
        (json.dumps({**VALID, "extra": 1}), "unexpected"),
        (json.dumps({k: v for k, v in VALID.items() if k != "rationale"}), "missing"),
        (json.dumps({**VALID, "future": True}), "not a number"),
        (json.dumps({**VALID, "future": "0.5"}), "not a number"),
        (json.dumps({**VALID, "novelty": 1.01}), "outside"),
        (json.dumps({**VALID, "novelty": -0.0001}), "outside"),
        (json.dumps({**VALID, "profile": 10**400}), "outside"),
        ('{"profile": NaN, "future": 0, "novelty": 0, "rationale": ""}', "non-finite"),
        (json.dumps({**VALID, "rationale": 3}), "not a string"),
        ('{"profile": 0.1, "profile": 0.2, "future": 0, "novelty": 0, "rationale": ""}',
         "duplicated"),
        ("Sure! " + json.dumps(VALID), "not one JSON object"),
        (json.dumps(VALID) + " Hope this helps.", "not one JSON object"),
        ("Here:\n```json\n" + json.dumps(VALID) + "\n```", "not one JSON object"),
        (json.dumps([VALID]), "not an object"),
        ("", "not one JSON object"),
    ],
)
def test_malformed_answers_are_rejected(content, reason):
    with pytest.raises(MalformedAnswer, match=reason):
        parse_answer(content)


def test_messages_show_recent_history_and_candidate_clipped():
    history = [f"past item {k}" for k in range(MAX_HISTORY_ITEMS + 5)]
    messages = build_messages(history, "x" * (MAX_ITEM_CHARS * 2))
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "past item 4\n" not in user and "past item 5\n" in user  # the 20 most recent
    assert f"past item {MAX_HISTORY_ITEMS + 4}" in user
    assert "x" * MAX_ITEM_CHARS not in user and "x" * (MAX_ITEM_CHARS - 3) + "..." in user
