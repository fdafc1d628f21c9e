"""An asyncio front of the engine: one thread owns the :class:`Engine` and steps it.

The server's handlers submit a *group* of requests (the ``n`` choices of one HTTP request,
times its prompts) and read its events from one ``asyncio.Queue``. The engine thread loops:
take new requests and aborts from a thread-safe inbox, ``step()`` while anything is
unfinished, hand each step's tokens to the event loop with ``call_soon_threadsafe``.
Requests join and leave at any step; which of them a step carries is the engine's
scheduler's business (decodes and prompt chunks packed into the step's token budget).

- an aborted group (its client went away) is ``engine.abort``-ed: its KV pages are freed
  before the next step;
- an exception inside a step fails the requests that step carried (status 500) and the
  loop goes on;
- at most ``max_seqs + max_queue`` requests are in flight; a group that does not fit is
  refused at once (:class:`QueueFull`, HTTP 429);
- :meth:`AsyncEngine.shutdown` fails whatever is still in flight and joins the thread.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from eventkernel.engine.engine import Engine
from eventkernel.engine.sampling import SamplingParams, partial_stop_length

logger = logging.getLogger("eventkernel.serve")

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class QueueFull(RuntimeError):
    """More requests are in flight than the server takes (HTTP 429)."""


class EngineStopped(RuntimeError):
    """The engine is shutting down or has stopped (HTTP 503)."""


@dataclass(frozen=True, slots=True)
class Token:
    """A choice's sampled token; when it finished, why, and its final text (stop strings
    cut) and generated ids."""

    index: int
    token_id: int
    finished: bool = False
    finish_reason: str | None = None
    text: str | None = None
    output_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Failure:
    """A choice that ended in an error: ``status`` is the HTTP status it maps to."""

    index: int
    status: int
    message: str


class ServerMetrics:
    """The prometheus metrics of one server, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_length = Gauge("eventkernel_queue_length",
                                  "Requests waiting for a slot in the engine", registry=r)
        self.running = Gauge("eventkernel_running_requests",
                             "Requests the engine is running", registry=r)
        self.kv_pages_in_use = Gauge("eventkernel_kv_pages_in_use",
                                     "KV-cache pages held by requests", registry=r)
        self.kv_pages_total = Gauge("eventkernel_kv_pages_total",
                                    "KV-cache pages of the model", registry=r)
        self.ttft = Histogram("eventkernel_time_to_first_token_seconds",
                              "From a request's arrival to its first token",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.itl = Histogram("eventkernel_inter_token_latency_seconds",
                             "Between a request's successive tokens", buckets=_ITL_BUCKETS,
                             registry=r)
        self.generated_tokens = Counter("eventkernel_generated_tokens",
                                        "Tokens sampled", registry=r)
        self.prompt_tokens = Counter("eventkernel_prompt_tokens",
                                     "Prompt tokens of admitted requests", registry=r)
        self.finished = Counter("eventkernel_requests_finished", "Requests ended, by reason",
                                ["reason"], registry=r)
        self.step_seconds = Histogram("eventkernel_step_seconds", "Engine step time",
                                      buckets=_ITL_BUCKETS, registry=r)


class RequestGroup:
    """The requests of one HTTP request; ``events`` yields :class:`Token` / :class:`Failure`
    for every member, in the order the engine produced them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.events: asyncio.Queue[Token | Failure] = asyncio.Queue()
        self.open: set[int] = set(range(size))     # member indices not ended yet
        self.aborted = False


@dataclass(slots=True)
class _Member:
    """A group member on the engine thread's side."""

    group: RequestGroup
    index: int
    arrival: float
    last_token: float | None = None


@dataclass(slots=True)
class _Add:
    group: RequestGroup
    prompts: list[tuple[list[int], SamplingParams]]
    arrival: float = field(default_factory=time.perf_counter)


@dataclass(slots=True)
class _Abort:
    group: RequestGroup


_STOP = object()


class AsyncEngine:
    """Runs ``engine`` on its own thread for an asyncio server (see the module's doc).

    Start it with :meth:`start` from the event loop; ``metrics`` receives the gauges,
    latencies and counters.
    """

    def __init__(self, engine: Engine, max_queue: int = 256,
                 metrics: ServerMetrics | None = None) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.engine = engine
        self.capacity = engine.limits.max_seqs + max_queue
        self.metrics = metrics or ServerMetrics()
        self.metrics.kv_pages_total.set(engine.limits.total_pages)
        self.in_flight = 0                  # requests submitted and not ended (loop side)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        # Engine-thread state: engine request id -> member, group -> its engine ids.
        self._members: dict[int, _Member] = {}
        self._group_ids: dict[RequestGroup, list[int]] = {}

    # -- the event loop's side --------------------------------------------------------------

    def start(self) -> None:
        """Start the engine thread; call from the event loop that will read the events."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="eventkernel-engine",
                                        daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def submit(self, prompts: Sequence[tuple[list[int], SamplingParams]]) -> RequestGroup:
        """Queue one group of (prompt ids, params); raises :class:`QueueFull` when the
        server holds too many requests, :class:`EngineStopped` when shutting down."""
        if not self.running:
            raise EngineStopped("the server is shutting down")
        if self.in_flight + len(prompts) > self.capacity:
            raise QueueFull(f"the server holds {self.in_flight} requests, at most "
                            f"{self.capacity} (max_seqs + max_queue): retry later")
        group = RequestGroup(len(prompts))
        self.in_flight += len(prompts)
        self._inbox.put(_Add(group, [(list(ids), params) for ids, params in prompts]))
        return group

    def abort(self, group: RequestGroup) -> None:
        """Drop the group's unfinished requests (their KV pages are freed at once)."""
        if group.aborted or not group.open:
            return
        group.aborted = True
        self.in_flight -= len(group.open)
        group.open.clear()
        self._inbox.put(_Abort(group))

    async def shutdown(self, timeout: float = 30.0) -> None:
        """Fail what is in flight, stop the thread and join it (waiting for a running
        step to end, at most ``timeout`` seconds)."""
        self._stopping = True
        if self._thread is None:
            return
        self._inbox.put(_STOP)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            logger.error("the engine thread did not stop within %.0f s", timeout)

    def _deliver(self, events: list[tuple[RequestGroup, Token | Failure]]) -> None:
        """On the event loop: put each event in its group's queue (aborted groups' are
        dropped) and count the requests that ended."""
        for group, event in events:
            if group.aborted or event.index not in group.open:
                continue
            if isinstance(event, Failure) or event.finished:
                group.open.discard(event.index)
                self.in_flight -= 1
            group.events.put_nowait(event)

    # -- the engine thread --------------------------------------------------------------------

    def _run(self) -> None:
        engine = self.engine
        while True:
            events: list[tuple[RequestGroup, Token | Failure]] = []
            commands = [self._inbox.get()] if not engine.has_unfinished() else []
            while True:
                try:
                    commands.append(self._inbox.get_nowait())
                except queue.Empty:
                    break
            stop = False
            for command in commands:
                if command is _STOP:
                    stop = True
                elif isinstance(command, _Add):
                    self._add(command, events)
                else:
                    self._abort(command.group)
            if stop:
                self._fail_all("the server is shutting down", 503, events)
                self._post(events)
                self._update_gauges()
                return
            if engine.has_unfinished():
                self._step(events)
            self._post(events)
            self._update_gauges()

    def _add(self, command: _Add, events: list) -> None:
        group, ids = command.group, []
        for index, (prompt_ids, params) in enumerate(command.prompts):
            try:
                request_id = self.engine.add_request(prompt_ids, params)
            except Exception as err:  # noqa: BLE001 - the server checked; say what is left
                events.append((group, Failure(index, 400, str(err))))
                continue
            self._members[request_id] = _Member(group, index, command.arrival)
            ids.append(request_id)
            self.metrics.prompt_tokens.inc(len(prompt_ids))
        if ids:
            self._group_ids[group] = ids

    def _abort(self, group: RequestGroup) -> None:
        for request_id in self._group_ids.pop(group, []):
            if self._members.pop(request_id, None) is not None:
                self.engine.abort(request_id)
                self.metrics.finished.labels("abort").inc()

    def _step(self, events: list) -> None:
        engine = self.engine
        try:
            outputs = engine.step()
        except Exception as err:  # noqa: BLE001 - fail this step's requests, go on
            logger.exception("an engine step failed")
            carried = [seq.request_id for seq in engine.scheduler.running]
            if not carried:      # the step failed before it ran anything: admission
                carried = [seq.request_id for seq in engine.scheduler.waiting]
            for request_id in carried:
                member = self._end(request_id)
                engine.abort(request_id)
                if member is not None:
                    events.append((member.group, Failure(
                        member.index, 500, f"the engine step failed: {err}")))
                    self.metrics.finished.labels("error").inc()
            return
        now = time.perf_counter()
        if engine.last_step is not None:
            self.metrics.step_seconds.observe(engine.last_step.seconds)
        self.metrics.generated_tokens.inc(len(outputs))
        for out in outputs:
            member = self._members.get(out.request_id)
            if member is None:
                continue
            if member.last_token is None:
                self.metrics.ttft.observe(now - member.arrival)
            else:
                self.metrics.itl.observe(now - member.last_token)
            member.last_token = now
            if out.finished:
                self._end(out.request_id)
                self.metrics.finished.labels(out.finish_reason or "stop").inc()
            events.append((member.group, Token(member.index, out.token_id, out.finished,
                                               out.finish_reason, out.text, out.output_ids)))

    def _end(self, request_id: int) -> _Member | None:
        member = self._members.pop(request_id, None)
        if member is not None:
            ids = self._group_ids.get(member.group)
            if ids is not None:
                ids.remove(request_id)
                if not ids:
                    del self._group_ids[member.group]
        return member

    def _fail_all(self, message: str, status: int, events: list) -> None:
        for request_id in list(self._members):
            member = self._end(request_id)
            self.engine.abort(request_id)
            events.append((member.group, Failure(member.index, status, message)))
            self.metrics.finished.labels("abort").inc()

    def _post(self, events: list) -> None:
        if events and self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._deliver, events)
            except RuntimeError:            # the loop closed first: nobody is listening
                pass

    def _update_gauges(self) -> None:
        scheduler, limits = self.engine.scheduler, self.engine.limits
        self.metrics.queue_length.set(len(scheduler.waiting) + self._inbox.qsize())
        self.metrics.running.set(len(scheduler.running))
        self.metrics.kv_pages_in_use.set(limits.total_pages - len(self.engine.blocks.free))


class TextDeltas:
    """Streamed text of one choice: the tokenizer's stream decoder (whole UTF-8 characters
    only) minus a held-back tail that could still begin a stop string, so a stop string
    never leaks into the stream. :meth:`finish` takes the engine's final text."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] | None) -> None:
        self._decoder = tokenizer.stream_decoder()
        self._stop = tuple(stop or ())
        self.sent = ""

    def push(self, token_id: int) -> str:
        """The new text that is safe to send after ``token_id`` (may be empty)."""
        self._decoder.push(token_id)
        text = self._decoder.text
        end = len(text) - partial_stop_length(text, self._stop)
        if end <= len(self.sent):
            return ""
        delta = text[len(self.sent):end]
        self.sent += delta
        return delta

    def finish(self, final_text: str) -> str:
        """The rest of ``final_text`` (the engine's, stop strings cut) after what was sent."""
        if not final_text.startswith(self.sent):
            logger.warning("streamed text %r is not a prefix of the final text %r",
                           self.sent, final_text)
            return ""
        delta = final_text[len(self.sent):]
        self.sent = final_text
        return delta
