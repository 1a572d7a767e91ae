"""A fake agent for the Python original (`agent-webkit-server` 0.2.0), for benchmarks.

The original's seam is the `sdk_factory` argument of
`agent_webkit_server.adapters.fastapi.create_app`: an async callable
`(config: SessionConfig, can_use_tool) -> SDKClient`, where `SDKClient` is the duck-typed
protocol in `agent_webkit_server.sdk_bridge` (connect, query, receive_messages, interrupt,
set_permission_mode, set_model, stop_task, disconnect). The session runs one receive loop over
`client.receive_messages()` (translated to wire events by `translate_sdk_messages`) and one send
loop that calls `client.query(<async iterable of one user message>)` once the previous turn's
`result` has been seen.

This module never imports `claude_agent_sdk` and never spawns the CLI. Its messages are plain
objects whose class names are `AssistantMessage` / `ResultMessage`: the original classifies
messages by `isinstance` against the real SDK classes first and then by class name, so these take
the same translation path a scripted fake takes in the original's own tests (content blocks are
already dicts, so `_serialize_blocks` passes them through).

Scenarios (the session's `model`, same syntax as our replay agent, crates/agent-webkit-replay):
- `echo` (also: no model) -- one `message_complete` (id `msg_echo_<turn>`) whose content is the
  user's content (a string becomes one text block), model = current model, then `result`.
- `stream:N[:ms[:bytes]]` -- N `message_complete` events (ids `msg_stream_<turn>_<i>`, i from 1)
  `ms` apart on an absolute schedule, each one text block of exactly `bytes` bytes (default `chunk <i>`), stop_reason
  `end_turn` on the last one only, then `result {subtype: "success"}`. With ms == 0 the agent
  yields to the event loop every 64 messages. An interrupt ends the turn at once with
  `result {subtype: "interrupted"}`.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, Optional

__all__ = ["FakeClient", "Scenario", "fake_sdk_factory", "parse_scenario", "stream_text"]

#: `stream` turns without a pause yield to the event loop every this many messages.
YIELD_EVERY = 64

#: Largest `bytes` accepted in `stream:N:ms:bytes` (same bound as the replay agent).
MAX_STREAM_BYTES = 16 * 1024 * 1024

#: Text used to pad `stream` messages (identical to the replay agent's FILLER).
FILLER = (
    " lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua."
)


class AssistantMessage:
    """Translated by the original into `message_complete` (class name is the contract)."""

    __slots__ = ("id", "content", "model", "stop_reason")

    def __init__(self, id: str, content: list, model: Optional[str], stop_reason: Optional[str]) -> None:
        self.id = id
        self.content = content
        self.model = model
        self.stop_reason = stop_reason


class ResultMessage:
    """Translated by the original into `result {session_id, subtype}` (no total_cost_usd)."""

    __slots__ = ("session_id", "subtype")

    def __init__(self, session_id: str, subtype: str) -> None:
        self.session_id = session_id
        self.subtype = subtype


class Scenario:
    __slots__ = ("kind", "count", "interval", "bytes")

    def __init__(self, kind: str, count: int = 0, interval: float = 0.0, nbytes: int = 0) -> None:
        self.kind = kind
        self.count = count
        self.interval = interval
        self.bytes = nbytes


def parse_scenario(model: Optional[str]) -> Scenario:
    """`echo` / no model / `stream:N[:ms[:bytes]]`; anything else is a ValueError."""
    if model is None or model == "" or model == "echo":
        return Scenario("echo")
    if model.startswith("stream:"):
        parts = model[len("stream:"):].split(":")
        if len(parts) > 3:
            raise ValueError(f"bad scenario {model!r}: too many fields")
        values = []
        for what, text in zip(("N", "ms", "bytes"), parts):
            if not text.isdigit():
                raise ValueError(f"bad scenario {model!r}: {what} must be a non-negative integer, got {text!r}")
            values.append(int(text))
        values += [0] * (3 - len(values))
        count, ms, nbytes = values
        if nbytes > MAX_STREAM_BYTES:
            raise ValueError(f"bad scenario {model!r}: bytes must be at most {MAX_STREAM_BYTES}")
        return Scenario("stream", count, ms / 1000.0, nbytes)
    raise ValueError(f"unknown scenario {model!r}; the fake agent knows: echo, stream:N[:ms[:bytes]]")


def stream_text(index: int, nbytes: int) -> str:
    """`chunk <i>`, padded with FILLER to exactly `nbytes` bytes when that is longer."""
    text = f"chunk {index}"
    missing = nbytes - len(text)
    if missing <= 0:
        return text
    reps, rest = divmod(missing, len(FILLER))
    return text + FILLER * reps + FILLER[:rest]


_CLOSE = object()


class FakeClient:
    """Satisfies the original's `SDKClient` protocol."""

    def __init__(self, scenario: Scenario, model: Optional[str]) -> None:
        self._scenario = scenario
        self._model = model
        # Stands in for the CLI's own session id (the original forwards the agent's id in
        # `result.session_id`, not the server's); same length as the server's uuid.
        self._agent_session_id = str(uuid.uuid4())
        self._queries: asyncio.Queue[Any] = asyncio.Queue()
        self._turn = 0
        self._turn_open = False
        self._interrupted = False
        self._wake: Optional[asyncio.Future[None]] = None
        self._closed = False

    # --- SDKClient protocol ---

    async def connect(self, prompt: Any | None = None) -> None:
        return None

    async def query(self, prompt: Any) -> None:
        content: Any = prompt
        if hasattr(prompt, "__aiter__"):
            content = None
            async for message in prompt:
                if isinstance(message, dict):
                    content = message.get("message", {}).get("content")
        self._queries.put_nowait(content)

    async def receive_messages(self) -> AsyncIterator[Any]:
        while True:
            content = await self._queries.get()
            if content is _CLOSE:
                return
            self._turn += 1
            self._turn_open = True
            try:
                if self._interrupted:  # interrupted while queued
                    pass
                elif self._scenario.kind == "echo":
                    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
                    yield AssistantMessage(f"msg_echo_{self._turn}", blocks, self._model, "end_turn")
                else:
                    async for message in self._stream_turn():
                        yield message
                subtype = "interrupted" if self._interrupted else "success"
                yield ResultMessage(self._agent_session_id, subtype)
            finally:
                self._turn_open = False
                self._interrupted = False

    async def _stream_turn(self) -> AsyncIterator[Any]:
        spec = self._scenario
        count, interval, nbytes = spec.count, spec.interval, spec.bytes
        turn, model = self._turn, self._model
        # Absolute schedule (event i at start + (i-1)*interval), like the replay agent.
        start = asyncio.get_running_loop().time()
        for i in range(1, count + 1):
            if i > 1:
                if interval > 0:
                    due = start + (i - 1) * interval
                    await self._pause(max(0.0, due - asyncio.get_running_loop().time()))
                elif i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                if self._interrupted:
                    return
            yield AssistantMessage(
                f"msg_stream_{turn}_{i}",
                [{"type": "text", "text": stream_text(i, nbytes)}],
                model,
                "end_turn" if i == count else None,
            )

    async def _pause(self, delay: float) -> None:
        """asyncio.sleep(delay) that an interrupt cuts short."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(delay, _resolve, fut)
        self._wake = fut
        try:
            await fut
        finally:
            handle.cancel()
            self._wake = None

    async def interrupt(self) -> None:
        # Ends the running turn (or the next queued one); otherwise a no-op.
        if self._turn_open or not self._queries.empty():
            self._interrupted = True
            if self._wake is not None:
                _resolve(self._wake)

    async def set_permission_mode(self, mode: str) -> None:
        return None

    async def set_model(self, model: Optional[str]) -> None:
        self._model = model

    async def stop_task(self, task_id: str) -> None:
        return None

    async def disconnect(self) -> None:
        if not self._closed:
            self._closed = True
            self._queries.put_nowait(_CLOSE)
            if self._wake is not None:
                _resolve(self._wake)


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


async def fake_sdk_factory(config: Any, can_use_tool: Any = None) -> FakeClient:
    """The `sdk_factory` for `create_app`: the scenario is the session's `model`.

    `can_use_tool` is accepted (the original passes it) and unused: these scenarios never ask
    for permission. An unknown scenario raises ValueError, which the original turns into a 500.
    """
    model = getattr(config, "model", None)
    client = FakeClient(parse_scenario(model), model)
    await client.connect()
    return client
