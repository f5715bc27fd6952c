"""The ways the benchmark streams a completion, and the phase runner.

Each path is an async context manager factory: ``async with path.slot() as request``
opens one stream slot (for the gateway: one authenticated WebSocket) and yields
``request(tag) -> Sample``. Opening a slot is not timed; only the requests are.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable

from websockets.asyncio.client import connect

if TYPE_CHECKING:
    import aiohttp

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "gpt-4-turbo"


# aiohttp and litellm are imported on first use, not with this module: bench.idle's client
# processes import it for open_authenticated inside their timed part, and litellm alone
# takes seconds of CPU to import.
@functools.cache
def _litellm():
    import litellm

    # The gateway's own litellm settings (gateway/providers.py), so both sides run the same code.
    litellm.telemetry = False
    litellm.disable_hf_tokenizer_download = True
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


@dataclass(frozen=True)
class MockSettings:
    ttft_ms: int
    rate: int
    tokens: int

    def prompt(self, tag: str) -> str:
        return (f"Write a short poem about a rainy day. "
                f"[[mock tokens={self.tokens} rate={self.rate} ttft_ms={self.ttft_ms} tag={tag}]]")


@dataclass
class Sample:
    """One request as the client saw it (wall-clock stamps to line up with the mock's records)."""

    tag: str
    sent_at: float = 0.0          # time.time() when the request left the client
    ttft: float | None = None     # seconds from sending to the first content token
    first_at: float | None = None  # time.time() of the first content token
    tokens: int = 0
    error: str | None = None
    reported_first_token_ms: int | None = None  # the gateway's own latency_ms.first_token (end frame)


Request = Callable[[str], Awaitable[Sample]]
SlotFactory = Callable[[], contextlib.AbstractAsyncContextManager[Request]]


def _start(tag: str) -> tuple[Sample, float]:
    sample = Sample(tag=tag, sent_at=time.time())
    return sample, time.perf_counter()


def _token(sample: Sample, t0: float) -> None:
    if sample.ttft is None:
        sample.ttft = time.perf_counter() - t0
        sample.first_at = time.time()
    sample.tokens += 1


# --- (a) the mock directly: aiohttp, streaming SSE ---------------------------------------
# Also the LiteLLM Proxy row: the same client, pointed at the proxy's /v1 instead of the mock's.

@contextlib.asynccontextmanager
async def mock_http_session() -> AsyncIterator[aiohttp.ClientSession]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


def mock_http_path(session: aiohttp.ClientSession, api_base: str, mock: MockSettings, api_key: str = "x") -> SlotFactory:
    @contextlib.asynccontextmanager
    async def slot() -> AsyncIterator[Request]:
        async def request(tag: str) -> Sample:
            body = {"model": MODEL, "messages": [{"role": "user", "content": mock.prompt(tag)}],
                    "max_tokens": mock.tokens, "stream": True, "stream_options": {"include_usage": True}}
            sample, t0 = _start(tag)
            async with session.post(f"{api_base}/chat/completions", json=body,
                                    headers={"Authorization": f"Bearer {api_key}"}) as resp:
                resp.raise_for_status()
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        for choice in json.loads(line[6:])["choices"]:
                            if choice["delta"].get("content"):
                                _token(sample, t0)
            return sample
        yield request
    return slot


# --- (b) litellm directly, in this process --------------------------------------------

def litellm_path(api_base: str, mock: MockSettings) -> SlotFactory:
    litellm = _litellm()

    @contextlib.asynccontextmanager
    async def slot() -> AsyncIterator[Request]:
        async def request(tag: str) -> Sample:
            sample, t0 = _start(tag)
            stream = await litellm.acompletion(
                model=f"openai/{MODEL}", api_base=api_base, api_key="x",
                messages=[{"role": "user", "content": mock.prompt(tag)}], max_tokens=mock.tokens,
                stream=True, stream_options={"include_usage": True}, num_retries=0, max_retries=0)
            async for chunk in stream:
                for choice in chunk.choices:
                    if choice.delta is not None and choice.delta.content:
                        _token(sample, t0)
            return sample
        yield request
    return slot


# --- (c) the gateway over WebSocket ------------------------------------------------------

async def open_authenticated(url: str, key: str, timeout: float = 60.0, *, max_size: int = 2**22,
                             local_addr: tuple[str, int] | None = None):
    """A WebSocket to the gateway that has received ``auth_ok``; `timeout` bounds the handshake
    and the wait for ``auth_ok`` each. `local_addr`: the source (host, port) to connect from."""
    ws = await connect(url, ping_interval=None, open_timeout=timeout, close_timeout=5, max_size=max_size,
                       local_addr=local_addr)
    try:
        await ws.send(json.dumps({"type": "auth", "token": key}))
        frame = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if frame.get("type") != "auth_ok":
            raise RuntimeError(f"authentication failed: {frame}")
    except BaseException:
        await ws.close()
        raise
    return ws


def gateway_path(url: str, key: str, mock: MockSettings, model: str = MODEL) -> SlotFactory:
    """`model`: what the client sends, a deployment's name (the default) or a route's alias."""
    @contextlib.asynccontextmanager
    async def slot() -> AsyncIterator[Request]:
        ws = await open_authenticated(url, key)
        try:
            async def request(tag: str) -> Sample:
                sample, t0 = _start(tag)
                await ws.send(json.dumps({"type": "llm_request", "request_id": tag, "model": model,
                                          "prompt": mock.prompt(tag), "parameters": {"max_tokens": mock.tokens}}))
                while True:
                    frame = json.loads(await ws.recv())
                    kind = frame["type"]
                    if kind == "llm_token":
                        _token(sample, t0)
                    elif kind == "llm_response_end":
                        sample.reported_first_token_ms = (frame.get("latency_ms") or {}).get("first_token")
                        return sample
                    elif kind == "error":
                        raise RuntimeError(f"gateway error {frame.get('code')}: {frame.get('message')}")
            yield request
        finally:
            await ws.close()
    return slot


# --- running a phase -------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group (a server and its
    workers), plus what its members' exited children used (cutime + cstime)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            total += sum(int(x) for x in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


CpuSource = int | Callable[[], float]  # a pid, or a function returning CPU seconds


def _cpu(source: CpuSource) -> float:
    return source() if callable(source) else cpu_seconds(source)


@dataclass
class PhaseResult:
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per watched process

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.ttft is not None]

    @property
    def errors(self) -> int:
        return len(self.samples) - len(self.ok)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


async def run_phase(slot: SlotFactory, *, streams: int, per_stream: int, tag: str,
                    pids: dict[str, CpuSource]) -> PhaseResult:
    """Open ``streams`` slots, then time ``per_stream`` sequential requests on each, all at once.

    The CPU time of each process in ``pids`` (a pid, or a function for a process group) is
    read just before and just after the timed part.
    """
    result = PhaseResult()
    async with contextlib.AsyncExitStack() as stack:
        requests = [await stack.enter_async_context(slot()) for _ in range(streams)]

        async def drive(i: int, request: Request) -> None:
            for j in range(per_stream):
                name = f"{tag}-{i}-{j}"
                try:
                    result.samples.append(await request(name))
                except Exception as exc:  # noqa: BLE001 (a failed request is counted, not fatal)
                    result.samples.append(Sample(tag=name, error=f"{type(exc).__name__}: {exc}"[:200]))

        cpu0 = {name: _cpu(source) for name, source in pids.items()}
        t0 = time.perf_counter()
        await asyncio.gather(*(drive(i, r) for i, r in enumerate(requests)))
        result.wall = time.perf_counter() - t0
        result.cpu = {name: _cpu(source) - cpu0[name] for name, source in pids.items()}
    return result
