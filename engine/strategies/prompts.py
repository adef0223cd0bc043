"""Every prompt corpusforge sends, in one place.

The four approaches of Li et al. (2024) share one frame and differ in one block:

- zero-shot: the task, the label set and the requested label only;
- one-shot / few-shot: plus real examples of the requested label from the train split;
- topic: plus one topic, sampled from a list the model wrote first (phase one, ``TOPICS_USER``);
- attributes (any approach, AttrPrompt style): plus a sampled length, style, audience and sub-topic.

Templates use ``str.format``; literal braces are doubled.
"""

from __future__ import annotations

__all__ = [
    "ATTRIBUTE_VALUES",
    "EXAMPLES_FORMAT",
    "GENERIC_SUBTOPICS",
    "ONE_FORMAT",
    "PLAIN_JSON_NOTE",
    "SHOT_MAX_CHARS",
    "SHOTS_BLOCK",
    "SYSTEM",
    "TASK_BLOCK",
    "TOPIC_LINE",
    "TOPICS_COUNT",
    "TOPICS_SYSTEM",
    "TOPICS_USER",
    "ATTRIBUTES_BLOCK",
    "REQUEST_MANY",
    "REQUEST_ONE",
]

SYSTEM = (
    "You write realistic, varied training data for a text classifier. "
    "Every example you write is new: never copy or lightly edit the examples you are shown. "
    "Answer with JSON only."
)

TASK_BLOCK = """Task: {description}
Texts are {domain}.
Labels:
{label_lines}"""

#: The requested label, for one example / for several.
REQUEST_ONE = 'Write one new example whose label is "{label}" ({label_description}).'
REQUEST_MANY = 'Write {n} new, clearly different examples, each with the label "{label}" ({label_description}).'

#: The shape of the answer. ``{fields}`` is e.g. ``"text": "..."``.
ONE_FORMAT = 'Answer with a JSON object: {{{fields}, "label": "{label}"}}'
EXAMPLES_FORMAT = (
    'Answer with a JSON object: {{"examples": [{{{fields}, "label": "{label}"}}, ...]}} holding exactly {n} examples.'
)
#: Added when no response_format enforces the schema (free-text fallback).
PLAIN_JSON_NOTE = "Write only the JSON, with no explanations before or after it."

SHOTS_BLOCK = """Real examples labelled "{label}" from the data set (for style and content only; do not copy them):
{shots}"""
#: Real examples are cut to this many characters in prompts (BBC articles run to thousands).
SHOT_MAX_CHARS = 600

TOPIC_LINE = 'The example is about this topic: "{topic}".'

ATTRIBUTES_BLOCK = """Make the {what}:
- length: {length}
- style: {style}
- written for: {audience}
- about: {subtopic}"""

#: AttrPrompt-style attribute values, sampled per request.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "length": (
        "very short (one sentence)",
        "short (two or three sentences)",
        "medium (a short paragraph)",
        "long (several paragraphs)",
    ),
    "style": (
        "formal",
        "casual and conversational",
        "matter-of-fact",
        "opinionated",
        "humorous",
        "emotional",
        "detailed and technical",
        "plain and simple",
    ),
    "audience": (
        "the general public",
        "experts in the field",
        "young adults",
        "busy professionals",
        "older readers",
        "local readers",
    ),
}

#: Label-agnostic sub-topics: the attribute fallback, and the topic approach's
#: fallback when the model's topic list is unusable.
GENERIC_SUBTOPICS: tuple[str, ...] = (
    "a recent event",
    "a personal experience",
    "a surprising detail",
    "a common problem",
    "a comparison between two things",
    "plans for the future",
    "a look back at the past",
    "money and costs",
    "people and their reactions",
    "a local angle",
    "an international angle",
    "a small everyday detail",
)

TOPICS_COUNT = 12
TOPICS_SYSTEM = "You help plan diverse training data for a text classifier. Answer with JSON only."
TOPICS_USER = """Task: {description}
Texts are {domain}.
List {n} different, specific topics that texts labelled "{label}" ({label_description}) could be about.
Each topic is a short phrase of a few words.
Answer with a JSON object: {{"topics": ["...", "..."]}}"""
