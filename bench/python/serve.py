"""Runs the Python original (`agent-webkit-server` 0.2.0) with the fake agent, for benchmarks.

    python serve.py --host 127.0.0.1 --port P --token T [--ring-size N] [--idle-timeout S]
        [--cli-path PATH]

Builds the original's FastAPI app (`agent_webkit_server.adapters.fastapi.create_app`) with
`fake_agent.fake_sdk_factory` and bearer-token auth, and serves it with uvicorn (one worker,
log level warning, uvloop and httptools when installed). Once the socket accepts connections it
prints exactly `agent-webkit-python listening on http://HOST:PORT` (the bound port, so
`--port 0` works) on stdout.

Everything but the agent is the original's code, with one exception: the event log's
lost-wakeup bug is fixed by default (see `_WakeupFixedEventLog`; `--pristine-event-log` keeps
it), because without the fix a burst turn never delivers its `result`. `--ring-size` /
`--idle-timeout` are not options of the original (it hard-codes EventLog(max_size=1000) and
idle_timeout_s=300); they are applied by substituting the class the original instantiates.

With `--cli-path PATH` the sessions run the real Claude CLI instead of the fake agent, through
the original's own default factory (`_real_sdk_factory`: a `claude_agent_sdk.ClaudeSDKClient`
per session, connected at create) with one change: `cli_path=PATH`, so the original runs the
same pinned CLI as our server rather than the one bundled in the SDK wheel. The CLI inherits this
process's environment (the bench points it at its mock Anthropic API).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from typing import Optional

# No __pycache__ next to fake_agent.py in the clone.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn  # noqa: E402

from agent_webkit_server import event_log as _event_log  # noqa: E402
from agent_webkit_server import session as _session  # noqa: E402
from agent_webkit_server.adapters import fastapi as _fastapi  # noqa: E402
from agent_webkit_server.auth import AuthConfig  # noqa: E402

from fake_agent import fake_sdk_factory  # noqa: E402


class _WakeupFixedEventLog(_event_log.EventLog):
    """The original's EventLog with its lost-wakeup bug fixed (one added check, marked FIX).

    In 0.2.0, `subscribe()` drains a snapshot of the ring, then registers a waiter without
    re-checking the log. Events appended while the subscriber sits at its last `yield` of a
    snapshot (the SSE generator awaits the socket write and `asyncio.wait_for` runs each
    `__anext__` as its own task, so the agent's task runs in between) wake nobody: the stream
    stalls until the *next* append. At the end of a turn there is no next append, so `result`
    is never delivered and after 15 s the keepalive timeout cancels (ends) the subscription.
    With the fake agent this stalls every burst turn after a few dozen events, so benchmarks
    use this class unless `--pristine-event-log` is given. Per-event work is unchanged.
    """

    async def subscribe(self, after_seq: int = 0):  # type: ignore[override]
        if after_seq > 0 and self._buf and after_seq < self._oldest_seq() - 1:
            raise _event_log.EvictedError(
                f"Last-Event-ID {after_seq} evicted; oldest available is {self._oldest_seq()}"
            )

        cursor = after_seq
        while True:
            # Drain everything past cursor.
            for ev in list(self._buf):
                if ev.seq > cursor:
                    cursor = ev.seq
                    yield ev
            if self._closed:
                return
            # FIX: events appended while we were suspended at a yield.
            if self._next_seq - 1 > cursor:
                continue
            # Wait for a new append.
            waiter = asyncio.Event()
            self._waiters.append(waiter)
            try:
                await waiter.wait()
            finally:
                pass


def _install_event_log(ring_size: Optional[int], pristine: bool) -> None:
    base = _event_log.EventLog if pristine else _WakeupFixedEventLog
    if ring_size is None and pristine:
        return
    size = 1000 if ring_size is None else ring_size

    class BenchEventLog(base):  # type: ignore[misc, valid-type]
        def __init__(self, max_size: int = size) -> None:
            super().__init__(max_size=max_size)

    # SessionRegistry.create() calls `EventLog()` through the session module's globals.
    _session.EventLog = BenchEventLog  # type: ignore[misc]


def real_cli_factory(cli_path: str):
    """The original's `_real_sdk_factory` (adapters/fastapi.py, 0.2.0) with `cli_path` added."""

    async def factory(config, can_use_tool):
        from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient  # type: ignore

        options_kwargs = {"can_use_tool": can_use_tool, "cli_path": cli_path}
        if config.model:
            options_kwargs["model"] = config.model
        if config.permission_mode:
            options_kwargs["permission_mode"] = config.permission_mode
        if config.cwd:
            options_kwargs["cwd"] = config.cwd
        client = ClaudeSDKClient(options=ClaudeAgentOptions(**options_kwargs))
        await client.connect()
        return client

    return factory


def _apply_idle_timeout(seconds: float) -> None:
    base = _session.SessionRegistry

    class TimedSessionRegistry(base):  # type: ignore[misc, valid-type]
        def __init__(self, sdk_factory, *, idle_timeout_s: float = seconds) -> None:
            super().__init__(sdk_factory, idle_timeout_s=idle_timeout_s)

    # create_app() calls `SessionRegistry(sdk_factory)` through the adapter module's globals.
    _fastapi.SessionRegistry = TimedSessionRegistry  # type: ignore[misc]


class _AnnouncingServer(uvicorn.Server):
    async def startup(self, sockets=None) -> None:  # type: ignore[override]
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        port = self.config.port
        for server in getattr(self, "servers", []):
            for sock in server.sockets or []:
                port = sock.getsockname()[1]
                break
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        print(f"agent-webkit-python listening on http://{shown}:{port}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=os.environ.get("AGENT_WEBKIT_TOKEN"))
    p.add_argument("--no-auth", action="store_true", help="disable bearer-token auth")
    p.add_argument("--ring-size", type=int, default=None, help="event ring per session (original: 1000)")
    p.add_argument("--idle-timeout", type=float, default=None, help="idle eviction, seconds (original: 300)")
    p.add_argument(
        "--pristine-event-log",
        action="store_true",
        help="keep the original's EventLog lost-wakeup bug (streams stall; see _WakeupFixedEventLog)",
    )
    p.add_argument(
        "--cli-path",
        default=None,
        help="run the real Claude CLI at PATH through the original's SDK factory (default: the fake agent)",
    )
    args = p.parse_args()
    if not args.no_auth and not args.token:
        p.error("--token is required (or --no-auth)")
    if args.ring_size is not None and args.ring_size < 1:
        p.error("--ring-size must be at least 1")
    _install_event_log(args.ring_size, args.pristine_event_log)
    if args.idle_timeout is not None:
        _apply_idle_timeout(args.idle_timeout)

    app = _fastapi.create_app(
        auth=AuthConfig(token=args.token, disabled=args.no_auth),
        sdk_factory=real_cli_factory(args.cli_path) if args.cli_path else fake_sdk_factory,
    )
    have = lambda name: importlib.util.find_spec(name) is not None  # noqa: E731
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop" if have("uvloop") else "asyncio",
        http="httptools" if have("httptools") else "h11",
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Not a serving behaviour: lets SIGTERM/SIGINT end the process even while SSE
        # streams are open (uvicorn otherwise waits for them before the lifespan shutdown).
        timeout_graceful_shutdown=1,
    )
    _AnnouncingServer(config).run()


if __name__ == "__main__":
    main()
