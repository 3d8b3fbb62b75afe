"""LLM client tests against a loopback fake OpenAI server (no network, no real LLM)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from reward_designer.llm import Completion, LLMClient, LLMError, ReplayClient, Usage, make_client
try:  # tests/ is on sys.path under pytest's default (prepend) import mode
    from fake_openai import FakeOpenAI
except ImportError:  # tests/ imported as a package
    from tests.fake_openai import FakeOpenAI

MSGS = [{"role": "system", "content": "you write rewards"}, {"role": "user", "content": "make the cheetah run"}]


def client(server: FakeOpenAI, model: str = "openai/fake-model", **kw) -> LLMClient:
    kw.setdefault("backoff_s", 0.01)  # keep retry tests fast
    kw.setdefault("api_key", "test-key")
    c = LLMClient(model, api_base=server.base_url, **kw)
    c._resolve()  # litellm's import (~2 s the first time) here, not inside a test's timing
    return c


# ---- n samples ---------------------------------------------------------------


def test_n_samples_in_one_request():
    with FakeOpenAI([["one", "two", "three"]]) as server:
        c = client(server)
        out = c.complete(MSGS, n=3)
        assert [x.text for x in out] == ["one", "two", "three"]
        assert len(server.chat_requests) == 1
        assert server.chat_requests[0]["n"] == 3
        assert server.chat_requests[0]["messages"] == MSGS
        assert all(isinstance(x, Completion) and not x.cached for x in out)
        # the request's tokens are on the first sample; sums are the totals
        assert sum(x.completion_tokens for x in out) == 3 == c.usage.completion_tokens
        assert c.usage.prompt_tokens > 0 and c.usage.calls == 1


def test_provider_without_n_sends_one_request_per_sample():
    # litellm says mistral takes no `n`; its API is OpenAI-shaped, so the fake serves it.
    with FakeOpenAI() as server:
        c = client(server, model="mistral/mistral-small")
        out = c.complete(MSGS, n=3)
        assert len(out) == 3 and len({x.text for x in out}) == 3
        assert len(server.chat_requests) == 3
        assert all("n" not in r for r in server.chat_requests)
        assert c.usage.calls == 3


def test_fewer_choices_than_asked_are_topped_up_one_by_one():
    with FakeOpenAI([["a"], "b", "c"]) as server:
        out = client(server).complete(MSGS, n=3)
        assert [x.text for x in out] == ["a", "b", "c"]
        reqs = server.chat_requests
        assert [r.get("n", 1) for r in reqs] == [3, 1, 1]


# ---- retries and deadline -----------------------------------------------------


def test_retry_after_429_and_500_then_success():
    with FakeOpenAI([(429, "slow down"), (500, "oops"), (503, "busy"), "finally"]) as server:
        c = client(server)
        out = c.complete(MSGS)
        assert [x.text for x in out] == ["finally"]
        assert len(server.chat_requests) == 4  # no hidden retries by litellm/openai on top of ours
        assert c.usage.calls == 1


def test_retries_exhausted_is_llm_error():
    with FakeOpenAI(lambda req: (500, "always broken")) as server:
        with pytest.raises(LLMError, match="giving up after 3 attempts"):
            client(server, max_retries=2).complete(MSGS)
        assert len(server.chat_requests) == 3


def test_deadline_respected_on_a_slow_server():
    def slow(req):
        time.sleep(3.0)  # bounded: the handler thread ends on its own
        return "too late"

    with FakeOpenAI(slow) as server:
        c = client(server, deadline_s=0.6)
        t0 = time.monotonic()
        with pytest.raises(LLMError, match="deadline"):
            c.complete(MSGS)
        elapsed = time.monotonic() - t0
        assert 0.5 <= elapsed < 1.5, elapsed


def test_deadline_does_not_rely_on_litellm_timeout(monkeypatch):
    # litellm's timeout= fires late (FACTS.md); stand in a litellm call that ignores it.
    import litellm

    def stuck(**kwargs):
        time.sleep(3.0)
        raise AssertionError("should have been abandoned")

    monkeypatch.setattr(litellm, "completion", stuck)
    c = LLMClient("openai/gpt-4o", api_key="k", deadline_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="deadline"):
        c.complete(MSGS)
    assert time.monotonic() - t0 < 1.5


def test_calls_reuse_the_connection():
    # litellm keys its HTTP clients on the timeout, among others: one that changed per call
    # left a connection open per call (two descriptors here, the fake server being in-process).
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with FakeOpenAI() as server:
        c = client(server)
        for _ in range(3):
            c.complete(MSGS)
        before = open_fds()
        for _ in range(20):
            c.complete(MSGS)
        assert open_fds() <= before + 2


def test_deadline_stops_retrying():
    with FakeOpenAI(lambda req: (500, "down")) as server:
        # the first backoff (10-20 s) would end past the 3 s deadline: give up now, don't sleep. The 3 s
        # leave a slow machine time for the first request (a new HTTP client) to get its 500.
        c = client(server, deadline_s=3.0, backoff_s=20.0, max_retries=100)
        t0 = time.monotonic()
        with pytest.raises(LLMError, match="deadline.*last error: HTTP 500"):
            c.complete(MSGS)
        assert time.monotonic() - t0 < 3.0
        assert len(server.chat_requests) == 1


def test_auth_error_is_not_retried():
    with FakeOpenAI(["never"], api_key="right-key") as server:
        with pytest.raises(LLMError, match="authentication"):
            client(server, api_key="wrong-key").complete(MSGS)
        assert len(server.chat_requests) == 1


def test_bad_request_is_not_retried():
    with FakeOpenAI([(400, "bad messages"), "never"]) as server:
        with pytest.raises(LLMError, match="HTTP 400"):
            client(server).complete(MSGS)
        assert len(server.chat_requests) == 1


# ---- cost ----------------------------------------------------------------------


def test_cost_recorded_for_a_mapped_model():
    with FakeOpenAI(["hello world"]) as server:
        c = client(server, model="openai/gpt-4o")  # litellm's bundled price map knows gpt-4o
        out = c.complete(MSGS)
        assert out[0].cost_usd is not None and out[0].cost_usd > 0
        assert c.usage.cost_usd == pytest.approx(out[0].cost_usd)
        assert c.usage.unknown_cost_calls == 0


def test_unknown_cost_is_none_and_counted():
    with FakeOpenAI(["a", "b"]) as server:
        c = client(server, model="openai/my-local-model")
        out = c.complete(MSGS) + c.complete(MSGS, purpose="other")
        assert [x.cost_usd for x in out] == [None, None]
        assert c.usage.unknown_cost_calls == 2 and c.usage.cost_usd == 0.0


def test_prices_override():
    with FakeOpenAI(["four words of reply"]) as server:
        c = client(server, model="openai/gpt-4o", prices=(1.0, 2.0))
        out = c.complete(MSGS)
        pt, ct = out[0].prompt_tokens, out[0].completion_tokens
        assert ct == 4 and pt > 0
        assert out[0].cost_usd == pytest.approx((pt * 1.0 + ct * 2.0) / 1e6)
        assert c.usage.unknown_cost_calls == 0


# ---- cache and log ---------------------------------------------------------------


def test_cache_hit_makes_no_request(tmp_path):
    cache = tmp_path / "cache"
    with FakeOpenAI() as server:
        first = client(server, cache_dir=cache).complete(MSGS, n=2)
        assert len(server.chat_requests) == 1
        # a resumed run: a fresh client over the same cache folder
        again = client(server, cache_dir=cache)
        second = again.complete(MSGS, n=2)
        assert len(server.chat_requests) == 1
        assert [x.text for x in second] == [x.text for x in first]
        assert all(x.cached for x in second)
        assert again.usage.cache_hits == 1 and again.usage.calls == 0
        # anything else in the key is a different call
        again.complete(MSGS, n=2, purpose="analysis")
        again.complete(MSGS, n=2, temperature=0.2)
        assert len(server.chat_requests) == 3
    assert not list(cache.glob("*.tmp")) and len(list(cache.glob("*.json"))) == 3


def test_call_log_and_replay_from_log(tmp_path):
    log_path = tmp_path / "calls.jsonl"
    cache = tmp_path / "cache"
    with FakeOpenAI() as server:
        c = client(server, cache_dir=cache, log_path=log_path)
        d1 = c.complete(MSGS, n=2, purpose="design")
        a1 = c.complete(MSGS, purpose="analysis")
        d2 = c.complete(MSGS + [{"role": "user", "content": "again"}], purpose="design")
        c.complete(MSGS, n=2, purpose="design")  # cache hit: logged, not replayed twice
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [e["purpose"] for e in entries] == ["design", "analysis", "design", "design"]
    assert [e["cached"] for e in entries] == [False, False, False, True]
    assert entries[0]["messages"] == MSGS and entries[0]["completions"] == [x.text for x in d1]
    assert entries[0]["completion_tokens"] > 0 and entries[0]["seconds"] >= 0
    assert entries[3]["completions"] == entries[0]["completions"]
    assert entries[3]["completion_tokens"] == 0 and entries[3]["cost_usd"] == 0.0  # a hit spends nothing

    replay = ReplayClient.from_log(log_path)
    # different prompts (training noise) still get the recorded replies, in order per purpose
    assert [x.text for x in replay.complete([{"role": "user", "content": "x"}], purpose="analysis")] == [a1[0].text]
    assert [x.text for x in replay.complete([], n=2, purpose="design")] == [x.text for x in d1]
    assert [x.text for x in replay.complete([], purpose="design")] == [d2[0].text]
    with pytest.raises(LLMError, match="no more replies"):
        replay.complete([], purpose="design")


def test_a_line_torn_by_a_kill_is_skipped_and_ended_before_the_next(tmp_path):
    log_path, cache = tmp_path / "calls.jsonl", tmp_path / "cache"
    with FakeOpenAI(["première", "second"]) as server:
        client(server, cache_dir=cache, log_path=log_path).complete(MSGS, tag="a")
        whole = log_path.read_bytes()
        log_path.write_bytes(whole + whole[: whole.index("è".encode()) + 1])  # cut inside a character
        c = client(server, cache_dir=cache, log_path=log_path)
        assert c.complete(MSGS, tag="a")[0].cached  # the whole line still answers from the cache
        c.complete(MSGS, tag="b")
    lines = log_path.read_bytes().splitlines()
    assert len(lines) == 4 and lines[1].startswith(b'{"time"') and not lines[1].endswith(b"}")
    entries = [json.loads(ln) for ln in lines[2:]]
    assert [(e["tag"], e["cached"], e["completions"]) for e in entries] == [("a", True, ["première"]),
                                                                            ("b", False, ["second"])]
    assert Usage.from_log(log_path).calls == 2  # the torn line is skipped


def test_an_interrupted_call_keeps_the_samples_it_paid_for(tmp_path, monkeypatch):
    log_path = tmp_path / "calls.jsonl"
    with FakeOpenAI() as server:
        c = client(server, model="mistral/mistral-small", log_path=log_path)  # one request per sample
        real, calls = c._request, [0]

        def request(*args):
            calls[0] += 1
            if calls[0] == 2:
                raise KeyboardInterrupt  # Ctrl-C while the second sample is asked for
            return real(*args)

        monkeypatch.setattr(c, "_request", request)
        with pytest.raises(KeyboardInterrupt):
            c.complete(MSGS, n=3)
    entry = json.loads(log_path.read_text())
    assert entry["error"] == "KeyboardInterrupt" and entry["requests"] == 1 and len(entry["completions"]) == 1
    assert Usage.from_log(log_path).calls == 1 and Usage.from_log(log_path).prompt_tokens > 0


def test_a_reply_with_a_lone_surrogate_is_logged_and_cached(tmp_path):
    log_path, cache = tmp_path / "calls.jsonl", tmp_path / "cache"
    with FakeOpenAI(["smile \ud83d done"]) as server:  # a JSON escape of half a character
        out = client(server, cache_dir=cache, log_path=log_path).complete(MSGS)
        assert out[0].text == "smile ? done"
        assert client(server, cache_dir=cache).complete(MSGS)[0].cached
    assert json.loads(log_path.read_text())["completions"] == ["smile ? done"]


def test_a_reply_logged_but_not_cached_is_served_from_the_log(tmp_path):
    """A kill between the log line and the cache file: the resumed call is not paid for twice."""
    log_path, cache = tmp_path / "calls.jsonl", tmp_path / "cache"
    with FakeOpenAI(["first", "second"]) as server:
        first = client(server, cache_dir=cache, log_path=log_path).complete(MSGS, n=1, tag="x")
        for f in cache.glob("*.json"):
            f.unlink()
        again = client(server, cache_dir=cache, log_path=log_path).complete(MSGS, n=1, tag="x")
        assert len(server.chat_requests) == 1
    assert again[0].cached and again[0].text == first[0].text == "first"
    assert len(list(cache.glob("*.json"))) == 1  # put back


def test_the_call_log_is_read_once_per_client_not_per_cache_miss(tmp_path, monkeypatch):
    """Each miss used to re-read the whole log: quadratic in a long run's calls."""
    import reward_designer.llm as llm_mod
    reads = []
    real = llm_mod._log_entries
    monkeypatch.setattr(llm_mod, "_log_entries", lambda path: reads.append(path) or real(path))
    log_path, cache = tmp_path / "calls.jsonl", tmp_path / "cache"
    with FakeOpenAI(["a", "b", "c"]) as server:
        c = client(server, cache_dir=cache, log_path=log_path)
        texts = [c.complete(MSGS, tag=t)[0].text for t in ("1", "2", "3")]
    assert texts == ["a", "b", "c"] and len(reads) == 1


def test_replay_from_yaml_and_exhaustion(tmp_path):
    path = tmp_path / "script.yaml"
    path.write_text("design:\n  - 'def compute_reward(state, action): ...'\n  - second\n  - third\nanalysis:\n  - looks fine\n")
    replay = ReplayClient.from_file(path)
    assert [x.text for x in replay.complete(MSGS, n=2)] == ["def compute_reward(state, action): ...", "second"]
    assert replay.complete(MSGS, purpose="analysis")[0].text == "looks fine"
    with pytest.raises(LLMError, match="analysis"):
        replay.complete(MSGS, purpose="analysis")
    with pytest.raises(LLMError, match="asked 2, 1 left"):
        replay.complete(MSGS, n=2)
    with pytest.raises(LLMError):
        replay.complete(MSGS, purpose="never-scripted")
    replay.check_reachable()  # no-op, same interface


# ---- configuration ------------------------------------------------------------------


def test_make_client_without_model(monkeypatch, tmp_path):
    monkeypatch.delenv("REWARD_DESIGNER_MODEL", raising=False)
    with pytest.raises(LLMError, match="no model configured: pass --model or set REWARD_DESIGNER_MODEL"):
        make_client(None)
    monkeypatch.setenv("REWARD_DESIGNER_MODEL", "openai/gpt-4o")
    assert isinstance(make_client(None), LLMClient)
    script = tmp_path / "r.yaml"
    script.write_text("design: [hi]\n")
    assert isinstance(make_client(None, replay=script), ReplayClient)
    with pytest.raises(LLMError, match="not found"):
        make_client(None, replay=tmp_path / "missing.yaml")


def test_check_reachable_closed_port_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on the port now
    c = LLMClient("openai/local", api_base=f"http://127.0.0.1:{port}/v1")
    t0 = time.monotonic()
    with pytest.raises(LLMError, match="cannot reach"):
        c.check_reachable()
    assert time.monotonic() - t0 < 2.0


def test_check_reachable_ok_and_bad_config(monkeypatch):
    with FakeOpenAI() as server:
        client(server).check_reachable()
    with pytest.raises(LLMError, match="unknown model"):
        LLMClient("no-such-provider-model").check_reachable()
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
        LLMClient("anthropic/claude-3-5-sonnet-20241022").check_reachable()


def test_local_server_needs_no_api_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeOpenAI(["ok"]) as server:
        c = LLMClient("openai/local", api_base=server.base_url)
        assert c.complete(MSGS)[0].text == "ok"


def test_import_is_cheap_and_offline():
    # litellm is imported on first use only, and never fetches its cost map.
    code = "import sys, reward_designer.llm as m, os; assert 'litellm' not in sys.modules; print(os.environ['LITELLM_LOCAL_MODEL_COST_MAP'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
