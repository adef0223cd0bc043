"""``generate --strategy few-shot`` never emits a copy of a real example it could have shown as a shot.

A small real HTTP server (aiohttp on 127.0.0.1) answers half the requests with a real training text of the
requested label, lightly edited (the way a model parrots its shots), and half with fresh text.
"""

import json
import random

from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.config import ProviderConfig, RateLimit, RetryPolicy, RunConfig
from engine.generate import GenerateOptions, generate
from engine.store import read_jsonl
from engine.tasks import load_real, load_task


def copying_app(pool: dict[str, list[str]], seed: int = 0) -> web.Application:
    rng = random.Random(seed)
    counter = iter(range(10**9))

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "copycat", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        schema = body["response_format"]["json_schema"]["schema"]
        label = schema["properties"]["label"]["enum"][0]
        if rng.random() < 0.5:
            text = rng.choice(pool[label]).upper()  # a shot, shouted: still a copy after normalisation
        else:
            n = next(counter)
            text = f"Fresh report number {n} on {label}: " + " ".join(f"w{n}x{i}" for i in range(30))
        content = json.dumps({"text": text, "label": label})
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "model": "copycat",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def test_few_shot_drops_copies_of_real_examples(tmp_path):
    task = load_task("bbc-news")
    pool: dict[str, list[str]] = {}
    for ex in load_real(task, "train"):
        pool.setdefault(ex.label, []).append(ex.text)
    server = TestServer(copying_app(pool), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        run = RunConfig(task="bbc-news", strategy="few-shot", n=40, shots=2, max_tokens=64)
        cfg = ProviderConfig(base_url=str(server.make_url("/v1")), model="copycat")
        options = GenerateOptions(out_dir=tmp_path, progress=False)
        final = await generate(run, cfg, RateLimit(max_in_flight=8), RetryPolicy(), options)
    finally:
        await server.close()
    data = list(read_jsonl(tmp_path / "data.jsonl"))
    real = {t.lower() for texts in pool.values() for t in texts}
    assert len(data) == 40
    assert not [r for r in data if r["text"].lower() in real]
    copies = [r for r in read_jsonl(tmp_path / "rejects.jsonl") if r["reason"] == "copies_reference"]
    assert copies and final["rejected"] >= len(copies)
