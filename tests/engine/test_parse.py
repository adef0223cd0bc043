from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.parse import REASONS, ParseResult, extract_json, match_label, parse_completion
from engine.strategies.prompts import GENERIC_SUBTOPICS
from engine.tasks import load_task

BBC = load_task("bbc-news")  # min_chars 80
TWEETS = load_task("tweet-sentiment")  # min_chars 8, max_chars 400
RTE = load_task("rte")
BOOLQ = load_task("boolq")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "outputs"

TWEET = "Just landed in Boston and the crew was amazing, thank you @JetBlue!"
ARTICLE = (
    "Chelsea extend lead at the top\n\nChelsea beat Everton 1-0 at Goodison Park on Saturday to go seven points clear "
    "at the top of the Premiership table."
)


def texts(result: ParseResult) -> list[str]:
    return [item.fields["text"] for item in result.items]


def reasons(result: ParseResult) -> list[str]:
    return [reason for _, reason in result.rejects]


# -- JSON shapes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        json.dumps({"text": TWEET, "label": "positive"}),
        json.dumps([{"text": TWEET, "label": "positive"}]),
        json.dumps({"examples": [{"text": TWEET, "label": "positive"}]}),
        json.dumps({"example": {"tweet": TWEET, "sentiment": "Positive"}}),
        "```json\n" + json.dumps({"text": TWEET, "label": "positive"}, indent=2) + "\n```",
        "Sure! Here is the example:\n\n" + json.dumps({"text": TWEET, "label": "positive"}) + "\n\nHope this helps!",
        json.dumps({"text": TWEET, "label": "positive"}) + "\n\nThis tweet expresses a positive sentiment.",
        json.dumps({"text": TWEET}),  # no label: the requested one
        json.dumps({"text": TWEET, "label": "POSITIVE."}),
        json.dumps({"text": TWEET, "label": "postive"}),  # misspelt
        json.dumps({"text": TWEET, "label": "Positive sentiment"}),
        json.dumps([TWEET]),
        json.dumps({"text": f'"{TWEET}"', "label": "positive"}),  # wrapped in quotes
    ],
)
def test_json_shapes_give_one_example(reply: str):
    result = parse_completion(reply, TWEETS, expected_label="positive")
    assert texts(result) == [TWEET]
    assert result.items[0].label == "positive"
    assert result.rejects == []


def test_several_examples_and_several_objects():
    many = {"examples": [{"text": f"{TWEET} #{i}", "label": "positive"} for i in range(3)]}
    assert len(parse_completion(json.dumps(many), TWEETS, expected_label="positive", per_request=3).items) == 3
    lines = "\n".join(json.dumps({"text": f"{TWEET} #{i}"}) for i in range(3))
    assert len(parse_completion(lines, TWEETS, expected_label="positive", per_request=3).items) == 3


def test_title_and_body_are_joined():
    reply = json.dumps({"title": "Chelsea extend lead at the top", "content": ARTICLE.split("\n\n")[1]})
    result = parse_completion(reply, BBC, expected_label="sport")
    assert texts(result) == [ARTICLE]


# -- labels --------------------------------------------------------------------------


def test_wrong_label_is_rejected_when_class_conditioned():
    reply = json.dumps({"text": TWEET, "label": "negative"})
    result = parse_completion(reply, TWEETS, expected_label="positive")
    assert result.items == [] and reasons(result) == ["wrong_label"]
    free = parse_completion(reply, TWEETS, expected_label=None)
    assert [i.label for i in free.items] == ["negative"]


def test_missing_and_unknown_labels():
    assert reasons(parse_completion(json.dumps({"text": TWEET}), TWEETS, expected_label=None)) == ["missing_label"]
    reply = json.dumps({"text": TWEET, "label": "sarcastic"})
    assert reasons(parse_completion(reply, TWEETS, expected_label="positive")) == ["unknown_label"]


@pytest.mark.parametrize(
    ("raw", "task", "label"),
    [
        ("Sports", BBC, "sport"),
        ("technology", BBC, None),
        ("tech.", BBC, "tech"),
        ("not entailment", RTE, "not_entailment"),
        ("Not-Entailment", RTE, "not_entailment"),
        ("entailment", RTE, "entailment"),
        (True, BOOLQ, "true"),
        ("Yes", BOOLQ, "true"),
        ("FALSE", BOOLQ, "false"),
        ("", BBC, None),
        ({"a": 1}, BBC, None),
    ],
)
def test_match_label(raw: object, task, label: str | None):
    assert match_label(raw, task) == label


# -- pair tasks ------------------------------------------------------------------------


def test_pair_fields():
    reply = json.dumps(
        {"premise": "The museum opened in 1901 in central Paris.", "hypothesis": "The museum is in Paris."}
    )
    result = parse_completion(reply, RTE, expected_label="entailment")
    assert result.items[0].fields == {
        "premise": "The museum opened in 1901 in central Paris.",
        "hypothesis": "The museum is in Paris.",
    }
    aliased = json.dumps({"sentence1": "A dog ran across the park.", "sentence2": "A cat slept.", "label": False})
    assert parse_completion(aliased, RTE, expected_label=None).rejects[0][1] == "unknown_label"
    missing = json.dumps({"premise": "Only a premise here, nothing else.", "label": "entailment"})
    assert reasons(parse_completion(missing, RTE, expected_label="entailment")) == ["missing_field"]
    boolq = json.dumps(
        {"passage": "Pluto was reclassified as a dwarf planet in 2006.", "question": "is pluto a planet"}
    )
    assert parse_completion(boolq, BOOLQ, expected_label="false").items[0].label == "false"
    assert reasons(parse_completion(json.dumps(["just a string"]), RTE, expected_label="entailment")) == [
        "missing_field"
    ]


def test_pair_key_value_lines():
    reply = "Premise: The bridge was closed for repairs all of May.\nHypothesis: The bridge was open in May.\nLabel: not entailment"
    result = parse_completion(reply, RTE, expected_label="not_entailment")
    assert result.items[0].fields["hypothesis"] == "The bridge was open in May."
    assert result.items[0].label == "not_entailment"


# -- plain text ------------------------------------------------------------------------------


def test_text_label_lines_and_blocks():
    reply = f"Text: {TWEET}\nLabel: positive"
    assert texts(parse_completion(reply, TWEETS, expected_label="positive")) == [TWEET]
    blocks = "\n\n".join(f"Example {i}:\n**Tweet:** {TWEET} #{i}\n**Label:** Positive" for i in range(1, 4))
    result = parse_completion(blocks, TWEETS, expected_label="positive", per_request=3)
    assert texts(result) == [f"{TWEET} #{i}" for i in range(1, 4)]


def test_numbered_and_bulleted_lists_when_several_were_asked():
    numbered = "Here are 3 tweets:\n\n1. " + TWEET + "\n2. Loving the new seats on this plane\n3. Best service ever!"
    result = parse_completion(numbered, TWEETS, expected_label="positive", per_request=3)
    assert texts(result) == [TWEET, "Loving the new seats on this plane", "Best service ever!"]
    bulleted = f"- {TWEET} (label: positive)\n- Meh, the app crashed again (label: negative)"
    result = parse_completion(bulleted, TWEETS, expected_label="positive", per_request=2)
    assert texts(result) == [TWEET] and reasons(result) == ["wrong_label"]


def test_whole_reply_as_one_text_with_preamble_and_outro_stripped():
    reply = f'Sure, here is a positive tweet:\n\n"{TWEET}"\n\nI hope this helps! Let me know if you need more.'
    assert texts(parse_completion(reply, TWEETS, expected_label="positive")) == [TWEET]
    article = f"Here's a sport article:\n\n{ARTICLE}\n\nLabel: sport"
    result = parse_completion(article, BBC, expected_label="sport")
    assert texts(result) == [ARTICLE] and result.items[0].label == "sport"


@pytest.mark.parametrize(
    "reply",
    [
        "I'm sorry, but I can't help with that request.",
        "As an AI language model, I cannot create content that could be harmful.",
        "I cannot generate that.",
        json.dumps({"text": "I'm sorry, I cannot write this tweet.", "label": "negative"}),
    ],
)
def test_refusals(reply: str):
    assert reasons(parse_completion(reply, TWEETS, expected_label="negative")) == ["refusal"]


def test_as_an_ai_opener_is_stripped_not_refused():
    reply = f"As an AI, I don't fly, but here goes.\n{TWEET}"
    result = parse_completion(reply, TWEETS, expected_label="positive")
    assert result.items and TWEET in result.items[0].fields["text"]


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        (json.dumps({"text": "", "label": "positive"}), "empty"),
        (json.dumps({"text": "...", "label": "positive"}), "placeholder"),
        (json.dumps({"text": "<text>", "label": "positive"}), "placeholder"),
        (json.dumps({"text": "ok", "label": "positive"}), "too_short"),
        (json.dumps({"text": "great " * 100, "label": "positive"}), "too_long"),
        (
            json.dumps({"text": "The author is happy, pleased, grateful or enthusiastic.", "label": "positive"}),
            "prompt_echo",
        ),
        ('{"text": "Loving the new lounge at JFK, the staff were so', "truncated"),
        ("{[}]", "unparseable"),
        ("42", "unparseable"),
    ],
)
def test_reject_reasons(reply: str, reason: str):
    result = parse_completion(reply, TWEETS, expected_label="positive")
    assert result.items == [] and reasons(result) == [reason]
    assert reason in REASONS


def test_broken_json_pairs_are_recovered():
    reply = '{"text": "Flight was on time and the crew smiled.", "label": "positive",}\n{"text": "Bags arrived fast!" "label": "positive"'
    assert texts(parse_completion(reply, TWEETS, expected_label="positive")) == [
        "Flight was on time and the crew smiled.",
        "Bags arrived fast!",
    ]


def test_extract_json():
    assert extract_json('prose {"a": 1} more prose') == {"a": 1}
    assert extract_json("```\n[1, 2]\n```") == [1, 2]
    assert extract_json("no json here") is None


def test_never_raises_on_garbage():
    rng = random.Random(0)
    alphabet = '{}[]":,\\\n abcLabel:Text:1.-*`'
    for _ in range(500):
        junk = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        for task in (TWEETS, RTE):
            result = parse_completion(junk, task, expected_label=task.labels[0], per_request=rng.choice([1, 3]))
            assert result.items or result.rejects
            assert all(reason in REASONS and reason != "parser_error" for _, reason in result.rejects)


# -- real captured model outputs (SmolLM2-135M via llama.cpp; see fixtures/outputs/capture.py) -----

EXPECTED_FIXTURES: dict[str, tuple[int, list[str]]] = {
    # name: (examples kept, reject reasons). SmolLM2-135M often answers with the label's description.
    "bbc_attributes_json": (1, []),
    "bbc_zero_shot_json": (0, ["prompt_echo"]),
    "bbc_zero_shot_text": (0, ["prompt_echo"]),
    "boolq_zero_shot_text": (0, ["unparseable"]),  # prose about "the passage", no passage or question
    "rte_zero_shot_json": (1, []),
    "rte_zero_shot_text": (0, ["identical_fields"]),  # JSON between prose, premise == hypothesis
    "tweet_few_shot_json": (1, []),
    "tweet_few_shot_text": (1, []),
    "tweet_many_json": (0, ["prompt_echo", "prompt_echo", "prompt_echo"]),  # near-copies of descriptions
    "tweet_many_text": (0, ["prompt_echo"]),
    "tweet_one_shot_json": (1, []),
    "tweet_one_shot_text": (1, []),  # "Here is one example:" preamble and a stray fence
    "tweet_topic_json": (1, []),
    "tweet_topic_text": (1, []),  # prose, then a fenced JSON block
    "tweet_zero_shot_json": (0, ["too_long"]),
    "tweet_zero_shot_text": (0, ["prompt_echo"]),  # JSON, then a follow-up question
}


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(EXPECTED_FIXTURES))
def test_real_model_outputs(name: str):
    fx = _fixture(name)
    task = load_task(fx["task"])
    result = parse_completion(fx["text"], task, expected_label=fx["label"], per_request=fx["per_request"])
    kept, rejected = EXPECTED_FIXTURES[name]
    assert (len(result.items), reasons(result)) == (kept, rejected)
    for item in result.items:
        assert item.label == fx["label"]
        assert set(item.fields) == set(task.fields)
        assert all(v and v == v.strip() and not v.startswith(("{", '"')) for v in item.fields.values())


def test_every_fixture_is_pinned_and_structured_ones_are_json():
    names = {p.stem for p in FIXTURES.glob("*.json")}
    assert names == set(EXPECTED_FIXTURES)
    for name in names:
        fx = _fixture(name)
        if fx["structured"]:
            assert fx["request"]["response_format"]["type"] == "json_schema"
            assert extract_json(fx["text"]) is not None


def test_reply_cut_by_max_tokens_keeps_the_complete_examples():
    reply = (
        '{"examples": [{"text": "Flight on time, great crew", "label": "positive"}, '
        '{"text": "Bags arrived fast, love it", "label": "positive"}, {"text": "The lounge was'
    )
    result = parse_completion(reply, TWEETS, expected_label="positive", per_request=3)
    assert texts(result) == ["Flight on time, great crew", "Bags arrived fast, love it"]


@pytest.mark.parametrize(
    "tweet",
    [
        "I can't believe how smooth that flight was, thank you!",
        "I'm sorry to say it but @united lost my bag AGAIN",
        "Sorry not sorry, this new phone is the best thing I bought all year",
    ],
)
def test_tweets_that_start_like_refusals_are_kept(tweet: str):
    result = parse_completion(json.dumps({"text": tweet}), TWEETS, expected_label="positive")
    assert texts(result) == [tweet]


def test_topic_key_is_not_a_label():
    reply = json.dumps({"text": TWEET, "topic": "friendly crews"})
    assert texts(parse_completion(reply, TWEETS, expected_label="positive")) == [TWEET]


def test_real_topic_phase_outputs():
    from engine.strategies import parse_topics

    fx = _fixture("tweet_topic_json")
    replies = fx["topic_replies"]
    # Cut off by max_tokens inside the JSON list: the complete strings are kept, the runaway one is dropped.
    # Over-long phrases (> 80 characters) are dropped too.
    assert parse_topics(replies["negative"]) == [
        "This is a positive place to live, in the city of Tokyo, Japan",
        "This city is a dream destination, a place that cannot be missed",
        "I'm going to the beach",
        "I'm not going to the beach anymore",
    ]
    assert parse_topics(replies["neutral"]) == ["Ladies and ladies", "Amber", "Lady and lady"]  # de-duplicated
    assert parse_topics(replies["positive"]) == []  # a run of emoji: the generic sub-topics take over
    assert fx["topics"]["positive"] == list(GENERIC_SUBTOPICS)
    assert fx["request"]["messages"][1]["content"].count("The example is about this topic:") == 1


def test_echo_key_fast_path_matches_the_regex():
    import re

    from engine.checks import echo_key as _echo_key

    non_word = re.compile(r"[\W_]+")
    rng = random.Random(0)
    alphabet = "ab Z9_-.,!\t\n'\"()" + "é—"
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        assert _echo_key(text) == non_word.sub(" ", text.lower()).strip(), repr(text)
