"""Why a run ended short of ``--n``, in one line that says what to do.

A run stops short when its request cap is reached (or its plan runs dry)
before every quota is met. The cause is almost always one of a few things,
read from the counters: requests that kept failing (a server answering HTML,
501, or gone), or answers that were all dropped for one reason (empty,
refused, duplicates, wrong label). ``explain`` names the dominant one with its
count and the fix.
"""

from __future__ import annotations

from typing import Any

__all__ = ["explain"]

#: What to do about the most common reason answers are dropped.
_FIXES = {
    "near_duplicate": "the model repeats itself: raise --temperature, or vary prompts with --strategy topic or --attributes",
    "exact_duplicate": "the model repeats itself: raise --temperature, or vary prompts with --strategy topic or --attributes",
    "copies_reference": "the model copies the prompt's examples: use fewer --shots or --strategy zero-shot",
    "refusal": "the model refuses the task: reword the task's description, or use another --model",
    "empty": "the answers are empty: check --max-tokens, or try --no-structured",
    "unparseable": "the answers have no usable example: try --no-structured, or a larger --model",
    "truncated": "answers are cut off by --max-tokens: raise it",
    "too_short": "the texts are shorter than the task's min_chars: raise --max-tokens, or lower min_chars in the task",
    "too_long": "the texts exceed the task's max_chars: lower --max-tokens",
    "prompt_echo": "the model repeats the prompt's descriptions: use a larger --model, or --strategy few-shot",
    "placeholder": "the model answers with placeholders: use a larger --model, or --no-structured",
    "wrong_label": "the model writes for other labels: reword the label descriptions, or use a larger --model",
    "unknown_label": "the model invents labels: try structured output (drop --no-structured) or a larger --model",
}
_FAILED_FIX = "check that --base-url is an OpenAI-compatible /v1 endpoint that is up, and its logs"


def explain(snap: dict[str, Any], *, cap: int, last_failure: str | None) -> str:
    """One line: how far the run got, why it stopped, and what to do."""
    accepted, target = snap.get("accepted", 0), snap.get("target", 0)
    head = f"stopped at {accepted:,}/{target:,}"
    cause = (
        f"the request cap ({cap:,} requests; --max-requests) was reached"
        if snap.get("request_cap_reached")
        else "no request was left to send"
    )
    failed = int(snap.get("failed", 0))
    rejects = {
        key.split(":", 1)[1]: int(value)
        for key, value in snap.items()
        if key.startswith("rejected:") and key != "rejected:surplus" and isinstance(value, int)
    }
    top_reason, top_count = max(rejects.items(), key=lambda kv: kv[1], default=("", 0))
    if failed and failed >= top_count:
        what = f"{failed:,} requests failed after their retries"
        if last_failure:
            what += f" (last: {last_failure})"
        return f"{head}: {cause}; {what}. Fix: {_FAILED_FIX}"
    if top_count:
        fix = _FIXES.get(top_reason, "see rejects.jsonl for what was dropped")
        return f"{head}: {cause}; {top_count:,} answers were dropped as {top_reason}. Fix: {fix}"
    return f"{head}: {cause}. Fix: raise --max-requests, then rerun with --resume"
