"""The judge's prompt (versioned) and the strict validation of its answers.

    docs = dataset.items.document
    messages = build_messages([docs(h) for h in history], docs(candidate))
    judgement = parse_answer(content)   # raises MalformedAnswer

The model must answer with one JSON object and nothing else:
    {"profile": p, "future": f, "novelty": n, "rationale": "..."}
with the three scores numbers in [0, 1] and the rationale a string. Answers are untrusted input:
any other key, a missing key, a boolean, NaN/Infinity, a duplicated key or text around the
object is rejected. One exception, by decision: a single Markdown code fence around the whole
object (```json ... ``` or ``` ... ```) is stripped first, since many chat models add it even when
told not to and it carries no ambiguity. Anything else outside the object still fails.

ANSWER_SCHEMA is the same contract as a JSON Schema, for structured output: the client sends it as
the request's `response_format`, so servers that constrain decoding by a schema (llama.cpp, vLLM,
SGLang) can only produce answers of this shape. Its scores are one of SCORE_LEVELS (0, 0.05, ..., 1)
as an `enum`, because llama.cpp's grammars ignore `minimum`/`maximum` on numbers (the packaged
SmolLM2 then answers 1, 2, 3); an enum every engine enforces. The rationale's schema is a `pattern`:
at most MAX_RATIONALE_CHARS characters, since a small model's unending rationale is cut at
max_tokens into invalid JSON (11 of 45 first answers on Scientific before the cap), and no quote,
backslash or control character, since llama-cpp-python's JSON grammar lets raw newlines into
strings, which JSON forbids (half of SmolLM2's constrained answers). parse_answer stays the judge of
record (any number in [0, 1] passes it): a server may ignore the schema, and such answers still fail
validation.

Changing the wording, the scale or the fields changes PROMPT_VERSION, so cached answers of the
old prompt are never read as answers to the new one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence

from sgrec_jax.judge.aspects import ASPECTS

PROMPT_VERSION = "psj-aspects-v1"
MAX_HISTORY_ITEMS = 20  # The most recent items shown; TIGER's history cap.
MAX_ITEM_CHARS = 300  # Item documents are cut to this many characters (bounds prompt tokens).
RATIONALE = "rationale"

SYSTEM_PROMPT = (
    "You judge how well a candidate product suits a shopper, from the products the shopper "
    "bought before (oldest first). Score three aspects, each a number from 0 to 1:\n"
    "- profile: how well the candidate fits the shopper's lasting tastes shown by the history;\n"
    "- future: how likely the shopper is to want the candidate next, given where the history "
    "is heading;\n"
    "- novelty: how different the candidate is from what the shopper already has (1 = a new "
    "kind of product, 0 = a near duplicate of a past purchase).\n"
    "Answer with exactly one JSON object and no other text:\n"
    '{"profile": <0..1>, "future": <0..1>, "novelty": <0..1>, "rationale": "<one sentence>"}'
)


ANSWER_SCHEMA_NAME = "psj_aspect_scores"
MAX_RATIONALE_CHARS = 200  # In the schema only: a rambling rationale would hit max_tokens.
# No quote, backslash or control character (so no escapes), at most MAX_RATIONALE_CHARS.
RATIONALE_PATTERN = rf'^[^"\\\x00-\x1f]{{0,{MAX_RATIONALE_CHARS}}}$'
SCORE_LEVELS = tuple(round(k / 20, 2) for k in range(21))  # 0.0, 0.05, ..., 1.0
ANSWER_SCHEMA: dict = {
    "type": "object",
    "properties": {
        **{aspect: {"type": "number", "minimum": 0, "maximum": 1, "enum": list(SCORE_LEVELS)}
           for aspect in ASPECTS},
        RATIONALE: {"type": "string", "pattern": RATIONALE_PATTERN},
    },
    "required": [*ASPECTS, RATIONALE],
    "additionalProperties": False,
}


class MalformedAnswer(ValueError):
    """The model's answer does not follow the schema (worth retrying, then 'not judged')."""


@dataclasses.dataclass(frozen=True)
class Judgement:
    """A validated answer: scores in ASPECTS order, each in [0, 1], and the model's rationale."""

    scores: tuple[float, ...]
    rationale: str


def _clip_text(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_ITEM_CHARS else text[: MAX_ITEM_CHARS - 3] + "..."


def build_messages(history_texts: Sequence[str], candidate_text: str) -> list[dict[str, str]]:
    """The chat messages asking for the candidate's aspect scores given the history texts."""
    shown = list(history_texts)[-MAX_HISTORY_ITEMS:]
    lines = [f"{k + 1}. {_clip_text(t) or '(no description)'}" for k, t in enumerate(shown)]
    user = (
        "Purchase history (oldest first):\n"
        + ("\n".join(lines) if lines else "(empty)")
        + "\n\nCandidate product:\n"
        + (_clip_text(candidate_text) or "(no description)")
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*)\n[ \t]*```\Z", re.DOTALL | re.IGNORECASE)


def _reject_constant(name: str) -> float:
    raise MalformedAnswer(f"non-finite number {name} in answer")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise MalformedAnswer(f"duplicated key in answer: {sorted(keys)}")
    return dict(pairs)


def parse_answer(content: str) -> Judgement:
    """Validates the model's answer text against the schema; raises MalformedAnswer."""
    if not isinstance(content, str):
        raise MalformedAnswer(f"answer content is {type(content).__name__}, not text")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise MalformedAnswer(f"answer is not one JSON object: {e.msg} at char {e.pos}") from None
    if not isinstance(obj, dict):
        raise MalformedAnswer(f"answer is a JSON {type(obj).__name__}, not an object")
    expected = set(ASPECTS) | {RATIONALE}
    if set(obj) != expected:
        missing, extra = sorted(expected - set(obj)), sorted(set(obj) - expected)
        raise MalformedAnswer(f"answer keys wrong: missing {missing}, unexpected {extra}")
    scores = []
    for aspect in ASPECTS:
        value = obj[aspect]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MalformedAnswer(f"{aspect} is {type(value).__name__}, not a number")
        if not (0.0 <= value <= 1.0 and math.isfinite(value)):
            raise MalformedAnswer(f"{aspect} = {value} is outside [0, 1]")
        scores.append(float(value))
    if not isinstance(obj[RATIONALE], str):
        raise MalformedAnswer(f"rationale is {type(obj[RATIONALE]).__name__}, not a string")
    return Judgement(scores=tuple(scores), rationale=obj[RATIONALE])
