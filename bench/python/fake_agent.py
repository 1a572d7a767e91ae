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
- `stream:N[:ms[:bytes]][:ts]` -- N `message_complete` events (ids `msg_stream_<turn>_<i>`, i
  from 1) `ms` apart on an absolute schedule, each one text block (see `stream_text`) of exactly
  `bytes` bytes (default: just the prefix `chunk <i>`), stop_reason `end_turn` on the last one
  only, then `result {subtype: "success"}`. With ms == 0 the agent yields to the event loop
  every 64 messages. An interrupt ends the turn at once with `result {subtype: "interrupted"}`.
  The trailing `ts` flag (e.g. `stream:10000:1:200:ts`) stamps every message with its emission
  time: the prefix becomes `chunk <i> t=<unix time in microseconds>`, taken with
  `time.time_ns() // 1000` right before the message is yielded to the session (the load
  generator's latency scenario subtracts it from its receipt time).

`stream_text` and `parse_scenario` must match the replay agent byte for byte and field for field
(`crates/agent-webkit-replay/src/agent.rs` and `scenario.rs`); the replay crate's test
`python_fake_agent_matches` runs this module's functions and compares.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, AsyncIterator, Optional

__all__ = ["FakeClient", "Scenario", "fake_sdk_factory", "parse_scenario", "stream_text"]

#: `stream` turns without a pause yield to the event loop every this many messages.
YIELD_EVERY = 64

#: Largest `bytes` accepted in `stream:N:ms:bytes` (same bound as the replay agent).
MAX_STREAM_BYTES = 16 * 1024 * 1024

#: The words `stream` messages are padded with: the distinct words of the classic lorem-ipsum
#: paragraph, lowercase (identical, in the same order, to VOCAB in the replay agent).
VOCAB = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed", "do",
    "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna", "aliqua", "enim",
    "ad", "minim", "veniam", "quis", "nostrud", "exercitation", "ullamco", "laboris", "nisi",
    "aliquip", "ex", "ea", "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit",
    "voluptate", "velit", "esse", "cillum", "eu", "fugiat", "nulla", "pariatur", "excepteur",
    "sint", "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia",
    "deserunt", "mollit", "anim", "id", "est", "laborum",
)

#: The word generator: x0 = index ^ WORD_SEED, then x = x * LCG_MUL + LCG_INC (mod 2**64) per word.
WORD_SEED = 0x9E3779B97F4A7C15
LCG_MUL = 6364136223846793005
LCG_INC = 1442695040888963407
_MASK64 = (1 << 64) - 1

#: Fields of `stream:N:ms:bytes` are u64 in the replay agent.
_MAX_U64 = _MASK64


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
    __slots__ = ("kind", "count", "interval", "bytes", "timestamps")

    def __init__(
        self, kind: str, count: int = 0, interval: float = 0.0, nbytes: int = 0, timestamps: bool = False
    ) -> None:
        self.kind = kind
        self.count = count
        self.interval = interval
        self.bytes = nbytes
        self.timestamps = timestamps


def parse_scenario(model: Optional[str]) -> Scenario:
    """`echo` / no model / `stream:N[:ms[:bytes]][:ts]`; anything else is a ValueError."""
    if model is None or model == "" or model == "echo":
        return Scenario("echo")
    if model.startswith("stream:"):
        parts = model[len("stream:"):].split(":")
        # `ts` is a flag after N (and the optional ms and bytes), never N itself.
        timestamps = len(parts) > 1 and parts[-1] == "ts"
        if timestamps:
            parts.pop()
        if len(parts) > 3:
            raise ValueError(f"bad scenario {model!r}: too many fields")
        values = []
        for what, text in zip(("N", "ms", "bytes"), parts):
            # ASCII digits only, and a u64, like the replay agent.
            if not (text.isascii() and text.isdigit()) or int(text) > _MAX_U64:
                raise ValueError(f"bad scenario {model!r}: {what} must be a non-negative integer, got {text!r}")
            values.append(int(text))
        values += [0] * (3 - len(values))
        count, ms, nbytes = values
        if nbytes > MAX_STREAM_BYTES:
            raise ValueError(f"bad scenario {model!r}: bytes must be at most {MAX_STREAM_BYTES}")
        return Scenario("stream", count, ms / 1000.0, nbytes, timestamps)
    raise ValueError(
        f"unknown scenario {model!r}; the fake agent knows: echo, stream:N[:ms[:bytes]][:ts]"
    )


def stream_text(index: int, nbytes: int, emitted_us: Optional[int] = None) -> str:
    """The text of `stream` message `index`, byte-identical to the replay agent's.

    The prefix `chunk <index>` (plus ` t=<emitted_us>` when stamped); when `nbytes` is longer,
    words appended as " " + word until the text reaches `nbytes`, cut to exactly `nbytes` bytes
    (all ASCII). A prefix longer than `nbytes` is returned whole. Words: x = index ^ WORD_SEED,
    then per word x = (x * LCG_MUL + LCG_INC) mod 2**64, word = VOCAB[(x >> 33) % len(VOCAB)].
    """
    text = f"chunk {index}" if emitted_us is None else f"chunk {index} t={emitted_us}"
    if len(text) >= nbytes:
        return text
    parts = [text]
    length = len(text)
    x = (index ^ WORD_SEED) & _MASK64
    while length < nbytes:
        x = (x * LCG_MUL + LCG_INC) & _MASK64
        word = VOCAB[(x >> 33) % len(VOCAB)]
        parts.append(word)
        length += 1 + len(word)
    return " ".join(parts)[:nbytes]


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
        count, interval, nbytes, stamped = spec.count, spec.interval, spec.bytes, spec.timestamps
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
            # Taken right before the message is yielded to the session (`ts` scenarios only).
            emitted_us = time.time_ns() // 1000 if stamped else None
            yield AssistantMessage(
                f"msg_stream_{turn}_{i}",
                [{"type": "text", "text": stream_text(i, nbytes, emitted_us)}],
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
