"""``eventkernel serve`` end to end: the real server as a subprocess on loopback, driven by
the real ``openai`` client (and raw HTTP where the client hides what is checked).

Most tests use the tiny-llama preset (random weights, byte tokenizer: one token is one
character of ASCII text). The built-in model's server starts first so that it loads while
the others run: it shows the 503 while loading, and answers a chat at the end.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEY = "test-key"
TINY = ["tiny-llama", "--max-seqs", "8", "--max-tokens-per-step", "32", "--max-context", "128"]
START_TIMEOUT = 60.0
BUILTIN_BUDGET = 60.0          # seconds the built-in model may take to load, else skipped


class Server:
    """A server subprocess: its base URL, and its log (stderr) for the assertions."""

    def __init__(self, args: list[str], nice: int = 0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "eventkernel.serve.server", *args, "--backend", "cpu",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
            preexec_fn=(lambda: os.nice(nice)) if nice else None)
        self.started = time.monotonic()

    def health(self) -> int | None:
        """/health's status, or None while nothing listens."""
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as err:
            return err.code
        except OSError:
            return None

    def wait_listening(self, timeout: float = START_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.stderr()}"
            status = self.health()
            if status is not None:
                return status
            time.sleep(0.02)
        raise AssertionError(f"the server did not listen within {timeout} s: {self.stderr()}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited: {self.stderr()}"
            if self.health() == 200:
                return True
            time.sleep(0.05)
        return False

    def client(self, key: str | None = KEY, timeout: float = 60.0):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key or "none",
                             max_retries=0, timeout=timeout)

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            lines = response.read().decode().splitlines()
        return {name: float(value) for name, _, value in
                (line.partition(" ") for line in lines if line and not line.startswith("#"))}

    def interrupt(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        """Send ``sig``; the exit code (the server is killed if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the server ignored signal {sig}: {self.stderr()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()

    def stderr(self) -> str:
        self.log.flush()
        return pathlib.Path(self.log.name).read_text()


def post(server: Server, path: str, body: dict | str, key: str | None = KEY):
    """(status, JSON body) of a raw POST."""
    data = body if isinstance(body, str) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(server.url + path, data.encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def builtin():
    """The built-in model's server (started first: it loads while the other tests run)."""
    # NOTE: niced, so that its load in the background slows the tiny servers less.
    server = Server(["--max-context", "256", "--max-seqs", "2"], nice=10)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def servers(builtin):
    """tiny-llama servers, started together: the main one (with an API key) and a busy one
    that holds two requests at most (max_seqs 2, max_queue 0)."""
    started = {"tiny": Server([*TINY, "--api-key", KEY, "--max-queue", "64"]),
               "busy": Server([*TINY[:1], "--max-seqs", "2", "--max-tokens-per-step", "16",
                               "--max-context", "64", "--max-queue", "0"])}
    try:
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def tiny(servers):
    server = servers["tiny"]
    assert server.wait_ready(), f"tiny-llama did not load: {server.stderr()}"
    return server


@pytest.fixture(scope="module")
def busy(servers):
    server = servers["busy"]
    assert server.wait_ready(), f"tiny-llama did not load: {server.stderr()}"
    return server


def greedy(client, prompt: str, max_tokens: int = 6, temperature: float = 0, **kwargs):
    return client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=max_tokens,
                                     temperature=temperature, **kwargs)


def test_the_command_line_checks_before_it_listens(capsys):
    from eventkernel.serve.cli import main
    assert main(["serve", "--help"]) == 0
    assert "--max-queue" in capsys.readouterr().out
    assert main(["serve", "tiny-llama", "--max-seqs", "0"]) == 2
    assert "max_seqs must be a positive integer" in capsys.readouterr().err
    assert main(["serve", "--max-queue", "-1"]) == 2
    assert main(["serve", "--port", "x"]) == 2


def test_503_while_the_model_loads(builtin):
    status = builtin.wait_listening()
    # NOTE: the built-in model takes seconds to load; the server answers from its start.
    assert status == 503, builtin.stderr()
    code, body = post(builtin, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})
    assert code == 503 and "loading" in body["error"]["message"]


def test_health_models_and_completion(tiny):
    assert tiny.health() == 200
    client = tiny.client()
    assert [m.id for m in client.models.list().data] == ["tiny-llama"]
    out = greedy(client, "Hello there")
    choice = out.choices[0]
    assert out.object == "text_completion" and choice.finish_reason == "length"
    assert len(choice.text) == 6           # byte tokenizer: one ASCII character per token
    assert out.usage.prompt_tokens == len("Hello there") and out.usage.completion_tokens == 6
    assert out.usage.total_tokens == len("Hello there") + 6
    assert greedy(client, "Hello there").choices[0].text == choice.text


def test_chat(tiny):
    client = tiny.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=5,
                                         temperature=0)
    assert out.object == "chat.completion" and out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "length" and out.usage.completion_tokens == 5
    # the byte tokenizer's template: <|role|>\ncontent\n per message, then the assistant's
    prompt = "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"
    assert out.usage.prompt_tokens == len(prompt)
    assert out.choices[0].message.content == greedy(client, prompt, 5).choices[0].text


def test_streaming_equals_the_non_streamed_text(tiny):
    client = tiny.client()
    expected = greedy(client, "Stream me", 6).choices[0].text
    chunks = list(greedy(client, "Stream me", 6, stream=True,
                         stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert not chunks[-1].choices and chunks[-1].usage.completion_tokens == 6
    assert chunks[-1].usage.prompt_tokens == len("Stream me")

    messages = [{"role": "user", "content": "Stream me"}]
    whole = client.chat.completions.create(model="tiny-llama", messages=messages,
                                           max_tokens=4, temperature=0)
    stream = client.chat.completions.create(model="tiny-llama", messages=messages,
                                            max_tokens=4, temperature=0, stream=True)
    parts = list(stream)
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == \
        whole.choices[0].message.content
    assert parts[-1].choices[0].finish_reason == "length"


def test_n_choices(tiny):
    client = tiny.client()
    out = greedy(client, "Twice", 3, n=2)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].text == out.choices[1].text        # greedy: the same
    assert out.usage.completion_tokens == 6 and out.usage.prompt_tokens == len("Twice")
    sampled = greedy(client, "Twice", 3, temperature=1.0, seed=7, n=2)
    again = greedy(client, "Twice", 3, temperature=1.0, seed=7, n=2)
    assert [c.text for c in sampled.choices] == [c.text for c in again.choices]
    streamed = list(greedy(client, "Twice", 3, n=2, stream=True))
    for index in (0, 1):
        text = "".join(c.choices[0].text for c in streamed if c.choices[0].index == index)
        assert text == out.choices[0].text


def test_stop_strings(tiny):
    client = tiny.client()
    prompt = "The cat sat on"
    free = greedy(client, prompt, 8, temperature=1.0, seed=3).choices[0].text
    assert len(free) == 8
    stop = free[3:5]
    expected = free[:free.find(stop)]
    out = greedy(client, prompt, 8, temperature=1.0, seed=3, stop=stop)
    assert out.choices[0].text == expected and out.choices[0].finish_reason == "stop"
    chunks = list(greedy(client, prompt, 8, temperature=1.0, seed=3, stop=[stop, "\x00no"],
                         stream=True))
    streamed = [c.choices[0].text for c in chunks]
    assert "".join(streamed) == expected and stop not in "".join(streamed)
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("body, param, words", [
    ({"temperature": -1}, "temperature", "temperature"),
    ({"top_p": 2}, "top_p", "top_p"),
    ({"max_tokens": 0}, "max_tokens", "max_tokens"),
    ({"temperature": "hot"}, "temperature", "valid number"),
    ({"n": 0}, "n", "n must be"),
    ({"stop": [""]}, "stop", "stop"),
    ({"bogus": 1}, "bogus", "unknown parameter"),
    ({"logprobs": 2}, "logprobs", "not supported yet"),
    ({"echo": True}, "echo", "not supported yet"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": [999]}, "prompt", "vocabulary"),
    ({"prompt": "x" * 130}, "prompt", "context"),
    ({"prompt": "Hi", "max_tokens": 127}, "prompt", "context"),
])
def test_bad_completion_requests_are_400(tiny, body, param, words):
    status, answer = post(tiny, "/v1/completions",
                          {"model": "tiny-llama", "prompt": "Hi", "max_tokens": 2, **body})
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


def test_error_statuses_through_the_client(tiny):
    client = tiny.client()
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="tiny-llama", prompt="y" * 200, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.chat.completions.create(model="tiny-llama", max_tokens=2, logprobs=True,
                                       messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny-llama", max_tokens=2,
                                       messages=[{"role": "robot", "content": "Hi"}])
    with pytest.raises(openai.NotFoundError, match="tiny-llama"):
        client.completions.create(model="gpt-9", prompt="Hi", max_tokens=2)
    with pytest.raises(openai.AuthenticationError, match="wrong"):
        tiny.client(key="not-the-key").models.list()
    status, answer = post(tiny, "/v1/completions", {"prompt": "Hi"}, key=None)
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    status, answer = post(tiny, "/v1/completions", "{not json")
    assert status == 400 and "JSON" in answer["error"]["message"]
    assert tiny.health() == 200              # /health and /metrics need no key


def test_a_client_that_disconnects_frees_its_request(tiny):
    client = tiny.client()
    stream = client.completions.create(model="tiny-llama", prompt="Go on and on", stream=True,
                                       max_tokens=100, temperature=0)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        metrics = tiny.metrics()
        if (metrics["eventkernel_running_requests"] == 0
                and metrics["eventkernel_kv_pages_in_use"] == 0):
            break
        time.sleep(0.1)
    assert metrics["eventkernel_running_requests"] == 0, metrics
    assert metrics["eventkernel_kv_pages_in_use"] == 0, metrics
    assert metrics['eventkernel_requests_finished_total{reason="abort"}'] >= 1
    assert greedy(client, "Still here", 3).choices[0].finish_reason == "length"


def test_concurrent_streams_match_one_at_a_time(tiny):
    client = tiny.client()
    prompts = ["a", "Hello", "The quick brown fox", "0123456789", "Why?", "zz top " * 3]
    alone = {p: greedy(client, p, 2).choices[0].text for p in prompts}

    def stream(index: int) -> tuple[str, str, str]:
        prompt = prompts[index % len(prompts)]
        chunks = list(greedy(client, prompt, 2, stream=True))
        return prompt, "".join(c.choices[0].text for c in chunks), \
            chunks[-1].choices[0].finish_reason

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(stream, range(48), timeout=120))
    assert len(results) == 48
    for prompt, text, reason in results:
        assert reason == "length" and text == alone[prompt], prompt
    metrics = tiny.metrics()
    assert metrics["eventkernel_running_requests"] == 0
    assert metrics["eventkernel_time_to_first_token_seconds_count"] >= 48
    assert metrics["eventkernel_inter_token_latency_seconds_count"] >= 48


def test_queue_full_is_429_and_sigint_drains(busy):
    client = busy.client(key=None)

    def complete(_: int) -> str:
        try:
            greedy(client, "Busy busy", 6)
            return "ok"
        except openai.RateLimitError as err:
            assert "retry later" in str(err)
            return "429"

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(complete, range(8), timeout=120))
    assert outcomes.count("ok") >= 2 and outcomes.count("429") >= 1, outcomes

    stream = iter(greedy(client, "Long one", 12, stream=True))
    first = next(stream)
    assert busy.interrupt(signal.SIGINT) == 0, busy.stderr()
    rest = list(stream)                 # the in-flight request was drained: it finished
    assert rest[-1].choices[0].finish_reason == "length"
    assert len(first.choices[0].text + "".join(c.choices[0].text for c in rest)) == 12
    assert "Traceback" not in busy.stderr(), busy.stderr()


def test_the_builtin_model(builtin):
    """Skipped when the built-in model does not load within BUILTIN_BUDGET seconds."""
    left = BUILTIN_BUDGET - (time.monotonic() - builtin.started)
    if not builtin.wait_ready(max(left, 1.0)):
        assert builtin.interrupt(signal.SIGTERM) == 0        # while loading: still clean
        assert "Traceback" not in builtin.stderr()
        pytest.skip(f"the built-in model did not load within {BUILTIN_BUDGET:.0f} s")
    client = builtin.client(key=None, timeout=120)
    out = client.chat.completions.create(
        model="smollm2-135m-instruct", max_tokens=12, temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in out.choices[0].message.content
    assert builtin.interrupt(signal.SIGTERM) == 0
    assert "Traceback" not in builtin.stderr()


def test_text_deltas_hold_back_partial_characters_and_stop_strings():
    from eventkernel.serve.async_engine import TextDeltas
    from eventkernel.serve.tokenizer import ByteTokenizer
    deltas = TextDeltas(ByteTokenizer(256), stop=["xyz", "!!"])
    pushed = [deltas.push(b) for b in "aé".encode()]
    assert pushed == ["a", "", "é"]                  # é's two bytes arrive whole
    assert [deltas.push(b) for b in b"xy"] == ["", ""]     # could begin "xyz"
    assert deltas.push(ord("q")) == "xyq"            # it did not
    assert deltas.push(ord("!")) == ""
    assert deltas.finish("aéxyq") == ""              # the engine cut "!!": nothing leaks


def test_a_failed_step_fails_its_requests_and_the_loop_goes_on():
    import asyncio

    from eventkernel.build import BuildOptions, build
    from eventkernel.engine.engine import Engine
    from eventkernel.engine.sampling import SamplingParams
    from eventkernel.serve.async_engine import AsyncEngine, Failure, QueueFull
    from eventkernel.serve.tokenizer import ByteTokenizer

    backend = build("tiny-llama", BuildOptions(backend="cpu", max_tokens_per_step=16,
                                               max_seqs=2, max_context=64)).backend

    class Flaky:
        """The backend, failing its first step."""
        compiled = backend.compiled
        failures = 1

        def run(self, inputs):
            if self.failures:
                self.failures -= 1
                raise RuntimeError("boom")
            return backend.run(inputs)

    engine = Engine(Flaky(), ByteTokenizer(256, eos_token_id=2))
    params = SamplingParams(max_tokens=2, temperature=0)

    async def scenario():
        front = AsyncEngine(engine, max_queue=0)
        front.start()
        try:
            failed = front.submit([([10, 11], params), ([12], params)])
            events = [await asyncio.wait_for(failed.events.get(), 30) for _ in range(2)]
            assert all(isinstance(e, Failure) and e.status == 500 and "boom" in e.message
                       for e in events)
            assert len(engine.blocks.free) == engine.limits.total_pages   # pages freed
            group = front.submit([([10, 11], params), ([12], params)])
            with pytest.raises(QueueFull):
                front.submit([([13], params)])                 # max_seqs 2 + max_queue 0
            ended = 0
            while ended < 2:
                event = await asyncio.wait_for(group.events.get(), 30)
                assert not isinstance(event, Failure), event
                ended += event.finished
            assert front.in_flight == 0
        finally:
            await front.shutdown(timeout=30)
        assert not front._thread.is_alive()

    asyncio.run(scenario())
