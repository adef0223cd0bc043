from __future__ import annotations

import json

import pytest

from engine.errors import AuthError, BadRequest, ConfigError, DataError
from engine.runstate import RunState
from engine.strategies import make_strategy, parse_topics, prompts
from engine.tasks import load_real, load_task
from engine.types import Completion, Example, Request

BBC = load_task("bbc-news")
TWEETS = load_task("tweet-sentiment")
RTE = load_task("rte")

BBC_ZERO_SHOT_SPORT = """\
Task: Classify a BBC News article into one of five topical sections.
Texts are news articles from the BBC News website (2004-2005), each with a headline and a few paragraphs.
Labels:
- business: business, companies, markets, the economy and finance
- entertainment: film, music, television, celebrities and the arts
- politics: UK and international politics, government, elections and parliament
- sport: sports events, athletes, teams and competitions
- tech: technology, the internet, computing, gadgets and video games

Write one new example whose label is "sport" (sports events, athletes, teams and competitions).
Answer with a JSON object: {"text": "...", "label": "sport"}"""

TWEETS_FEW_SHOT_POSITIVE = """\
Task: Classify the sentiment a tweet expresses.
Texts are short English tweets about brands, airlines, products and technology.
Labels:
- negative: the author is unhappy, critical, angry or disappointed
- neutral: factual or mixed, neither clearly positive nor clearly negative
- positive: the author is happy, pleased, grateful or enthusiastic

Real examples labelled "positive" from the data set (for style and content only; do not copy them):
{"text": "tweet 5 text", "label": "positive"}
{"text": "tweet 8 text", "label": "positive"}

Write one new example whose label is "positive" (the author is happy, pleased, grateful or enthusiastic).
Answer with a JSON object: {"text": "...", "label": "positive"}"""

RTE_ATTRIBUTES_FREE_TEXT = """\
Task: Decide whether the premise entails the hypothesis (Recognizing Textual Entailment).
Texts are news and encyclopedia sentences (premise) paired with a short claim (hypothesis).
Labels:
- entailment: the hypothesis is certainly true given the premise
- not_entailment: the hypothesis is not implied by the premise (it may be false or undetermined)

Make the examples:
- length: short (two or three sentences)
- style: matter-of-fact
- written for: young adults
- about: a local angle

Write 2 new, clearly different examples, each with the label "entailment" (the hypothesis is certainly true given \
the premise).
Answer with a JSON object: {"examples": [{"premise": "...", "hypothesis": "...", "label": "entailment"}, ...]} \
holding exactly 2 examples.
Write only the JSON, with no explanations before or after it."""


def _pool() -> list[Example]:
    return [Example(id=f"ex-{i}", fields={"text": f"tweet {i} text"}, label=TWEETS.labels[i % 3]) for i in range(12)]


def test_unknown_strategy_lists_names():
    with pytest.raises(ConfigError) as info:
        make_strategy("two-shot", BBC)
    assert "zero-shot" in info.value.hint and "topic" in info.value.hint


def test_zero_shot_snapshot():
    strategy = make_strategy("zero-shot", BBC, max_tokens=300, temperature=0.9, top_p=0.95)
    req = strategy.build(request_id="req-1", label="sport", seed=11)
    assert req.messages == [
        {"role": "system", "content": prompts.SYSTEM},
        {"role": "user", "content": BBC_ZERO_SHOT_SPORT},
    ]
    assert (req.id, req.label, req.seed, req.max_tokens, req.temperature, req.top_p) == (
        "req-1",
        "sport",
        11,
        300,
        0.9,
        0.95,
    )
    assert req.meta == {"strategy": "zero-shot", "per_request": 1, "structured": True}
    assert strategy.reference_texts() == []


def test_few_shot_snapshot_and_variation():
    strategy = make_strategy("few-shot", TWEETS, shots=2, train_examples=_pool())
    req = strategy.build(request_id="r", label="positive", seed=3)
    assert req.messages[1]["content"] == TWEETS_FEW_SHOT_POSITIVE
    assert req.meta["shots"] == ["ex-5", "ex-8"]
    again = strategy.build(request_id="r", label="positive", seed=3)
    assert again.messages == req.messages and again.meta == req.meta
    shot_sets = {tuple(strategy.build(request_id="r", label="positive", seed=s).meta["shots"]) for s in range(20)}
    assert len(shot_sets) > 3  # varied across requests
    for seed in range(10):  # class-conditioned shots
        for shot in strategy.build(request_id="r", label="negative", seed=seed).meta["shots"]:
            assert int(shot.split("-")[1]) % 3 == 0
    assert sorted(strategy.reference_texts()) == sorted(e.text for e in _pool())


def test_pair_task_attributes_free_text_snapshot():
    strategy = make_strategy("zero-shot", RTE, structured=False, attributes=True, per_request=2)
    req = strategy.build(request_id="r", label="entailment", seed=3)
    assert req.messages[1]["content"] == RTE_ATTRIBUTES_FREE_TEXT
    assert req.response_format is None
    assert req.meta["attributes"] == {
        "length": "short (two or three sentences)",
        "style": "matter-of-fact",
        "audience": "young adults",
        "subtopic": "a local angle",
    }


def test_one_shot_uses_real_train_split_only():
    strategy = make_strategy("one-shot", BBC, train_examples=load_real(BBC, "train"))
    train_ids = {e.id for e in load_real(BBC, "train")}
    test_texts = {e.text for e in load_real(BBC, "test")}
    for seed in range(30):
        req = strategy.build(request_id=f"r{seed}", label=BBC.labels[seed % 5], seed=seed)
        assert len(req.meta["shots"]) == 1 and req.meta["shots"][0] in train_ids
    assert not set(strategy.reference_texts()) & test_texts
    # Long articles are cut in the prompt.
    shots_block = req.messages[1]["content"].split("\n\n")[2]
    assert len(shots_block) < prompts.SHOT_MAX_CHARS + 300


def test_few_shot_without_real_data_is_a_data_error():
    with pytest.raises(DataError, match="needs real train examples"):
        make_strategy("few-shot", load_task("sst2"))  # a strategy never loads data itself
    with pytest.raises(DataError, match="no real train examples"):
        make_strategy("one-shot", TWEETS, train_examples=[e for e in _pool() if e.label != "neutral"])


def test_build_rejects_unknown_label():
    with pytest.raises(ConfigError):
        make_strategy("zero-shot", BBC).build(request_id="r", label="weather", seed=0)


def test_response_format_single_and_many():
    fmt = make_strategy("zero-shot", RTE).response_format("entailment")
    assert fmt == {
        "type": "json_schema",
        "json_schema": {
            "name": "example",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "premise": {"type": "string"},
                    "hypothesis": {"type": "string"},
                    "label": {"type": "string", "enum": ["entailment"]},
                },
                "required": ["premise", "hypothesis", "label"],
                "additionalProperties": False,
            },
        },
    }
    many = make_strategy("zero-shot", BBC, per_request=4).response_format("tech")
    assert many is not None
    examples = many["json_schema"]["schema"]["properties"]["examples"]
    assert (examples["minItems"], examples["maxItems"]) == (4, 4)
    assert examples["items"]["properties"]["label"]["enum"] == ["tech"]
    assert many["json_schema"]["schema"]["required"] == ["examples"]


def test_with_structured_fallback():
    strategy = make_strategy("zero-shot", BBC)
    free = strategy.with_structured(False)
    assert strategy.structured and not free.structured
    req = free.build(request_id="r", label="tech", seed=1)
    assert req.response_format is None and prompts.PLAIN_JSON_NOTE in req.messages[1]["content"]
    strategy.structured = False  # settable in place too
    assert strategy.build(request_id="r", label="tech", seed=1).response_format is None


class FakeLLM:
    """A scripted ``complete``: the reply per label, and every request it saw."""

    def __init__(self, replies: dict[str, str], reject_structured: bool = False) -> None:
        self.replies = replies
        self.reject_structured = reject_structured
        self.requests: list[Request] = []

    async def __call__(self, request: Request) -> Completion:
        self.requests.append(request)
        if self.reject_structured and request.response_format is not None:
            raise BadRequest("response_format is not supported", status=400)
        return Completion(request_id=request.id, text=self.replies[str(request.label)])


async def test_topic_prepare_records_topics_in_the_run_state_and_reuses_them():
    llm = FakeLLM(
        {
            "negative": '{"topics": ["delayed flights", "lost luggage", "rude staff", "broken phone"]}',
            "neutral": "Sure! Here are some topics:\n1. Flight schedules\n2. New phone release\n3. Store opening hours\n",
            "positive": "I'm sorry, I can't help with that.",
        }
    )
    strategy = make_strategy("topic", TWEETS, seed=5)
    with pytest.raises(ConfigError, match="prepare"):
        strategy.build(request_id="r", label="negative", seed=1)
    await strategy.prepare(llm)
    assert len(llm.requests) == 3
    assert llm.requests[0].response_format is not None
    assert "negative" in llm.requests[0].messages[1]["content"]
    stored = strategy.state.topics_json()
    assert stored is not None
    assert stored["topics"]["negative"] == ["delayed flights", "lost luggage", "rude staff", "broken phone"]
    assert stored["topics"]["neutral"] == ["Flight schedules", "New phone release", "Store opening hours"]
    assert stored["topics"]["positive"] == list(prompts.GENERIC_SUBTOPICS)
    assert stored["fallback"] == ["positive"]
    req = strategy.build(request_id="r", label="negative", seed=1)
    assert req.meta["topic"] in stored["topics"]["negative"]
    assert f'"{req.meta["topic"]}"' in req.messages[1]["content"]
    topics_seen = {strategy.build(request_id="r", label="negative", seed=s).meta["topic"] for s in range(30)}
    assert len(topics_seen) == 4

    # Resume: a new strategy given the persisted state (what the store reads back) asks nothing.
    persisted = RunState.from_json(json.loads(json.dumps(strategy.state.state_json())), json.loads(json.dumps(stored)))
    resumed = make_strategy("topic", TWEETS, seed=5, state=persisted)
    silent = FakeLLM({})
    await resumed.prepare(silent)
    assert silent.requests == []
    assert resumed.build(request_id="r", label="negative", seed=1).messages == req.messages


async def test_topic_prepare_falls_back_to_plain_text_when_structured_is_rejected():
    llm = FakeLLM({lab: '["a", "b", "c", "topic one", "topic two", "topic three"]' for lab in BBC.labels}, True)
    strategy = make_strategy("topic", BBC, attributes=True)
    await strategy.prepare(llm)
    # one structured request is refused; the run learns it once and asks every label in plain text
    assert [r.response_format is None for r in llm.requests] == [False] + [True] * len(BBC.labels)
    assert strategy.state.structured is False and not strategy.structured
    req = strategy.build(request_id="r", label="tech", seed=2)
    # Short junk ("a") is dropped; the topic is also the attributes' sub-topic.
    assert req.meta["topic"] in ("topic one", "topic two", "topic three")
    assert req.meta["attributes"]["subtopic"] == req.meta["topic"]


async def test_topic_prepare_propagates_fatal_errors():
    async def denied(request: Request) -> Completion:
        raise AuthError("bad key", status=401)

    strategy = make_strategy("topic", TWEETS)
    with pytest.raises(AuthError):
        await strategy.prepare(denied)
    assert strategy.state.topics is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"topics": ["A b", "C d", "A b"]}', ["A b", "C d"]),
        ('```json\n["Flight delays", "Seat upgrades"]\n```', ["Flight delays", "Seat upgrades"]),
        ("- **Battery life**\n- Screen size\n* Price", ["Battery life", "Screen size", "Price"]),
        ('[{"topic": "Transfer news"}, {"name": "Injuries"}]', ["Transfer news", "Injuries"]),
        ("Topics:\n1) Mergers\n2) Layoffs", ["Mergers", "Layoffs"]),
    ],
)
def test_parse_topics(reply: str, expected: list[str]):
    assert parse_topics(reply) == expected
