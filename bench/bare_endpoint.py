"""The baselines: a bare uvicorn endpoint that reads the request and does nothing else, and the
same nothing behind an empty FastAPI route (the framework's own cost, before any of ours)."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from fastapi import FastAPI, Request


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"status":"ok"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


empty_fastapi = FastAPI()


@empty_fastapi.post("/webhooks/{provider}")
async def webhook(provider: str, request: Request) -> dict[str, str]:
    await request.body()
    return {"status": "ok"}


if __name__ == "__main__":
    target = empty_fastapi if "--fastapi" in sys.argv else app
    uvicorn.run(
        target, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False
    )
