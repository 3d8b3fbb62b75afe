"""The LLM client: litellm underneath, our own deadline, retries, cost, cache and log.

- ``LLMClient`` talks to any litellm model string (``openai/gpt-4o``,
  ``anthropic/...``, ``ollama/...``, ``openai/<name>`` + ``api_base`` for a
  local OpenAI-compatible server). ``complete(messages, n=...)`` returns ``n``
  ``Completion`` objects.
- ``ReplayClient`` serves scripted (YAML) or recorded (call log) replies in
  order per purpose, for tests and for re-running a recorded design session.
- ``make_client`` picks one of them from the command-line options.

litellm is imported lazily (about 2 s) and with the bundled cost map, so
``import reward_designer.llm`` is cheap and never touches the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel

from .errors import UserError

# Before litellm is imported anywhere: without this it fetches its cost map
# from GitHub at import time (and logs warnings when offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL_ENV = "REWARD_DESIGNER_MODEL"

log = logging.getLogger(__name__)


class Completion(BaseModel):
    text: str
    # Tokens and cost of the request that produced this sample. When one request
    # returns several samples, the first carries the request's totals and the
    # others zeros, so sums over completions are the true totals.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: the price of this model is unknown
    cached: bool = False
    model: str = ""


class Usage(BaseModel):
    calls: int = 0  # HTTP requests that returned a response
    cache_hits: int = 0  # complete() calls answered from the cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0  # of the requests whose price is known
    unknown_cost_calls: int = 0

    @classmethod
    def from_log(cls, path: Path) -> "Usage":
        """What the calls in a call log spent. The log gets a line as each call ends, so a run
        killed before it saved its totals still has them here."""
        usage = cls()
        for entry in _log_entries(path):
            if entry.get("cached"):
                usage.cache_hits += 1
                continue
            requests = int(entry.get("requests") or 0)
            usage.calls += requests
            usage.prompt_tokens += int(entry.get("prompt_tokens") or 0)
            usage.completion_tokens += int(entry.get("completion_tokens") or 0)
            if entry.get("cost_usd") is None:
                usage.unknown_cost_calls += requests
            else:
                usage.cost_usd += float(entry["cost_usd"])
        return usage


class LLMError(UserError):
    """A one-line message fit to show a user: bad config, unreachable, auth, retries exhausted."""


class RequestRefused(LLMError):
    """The provider refused this one request (too long, malformed): sending it again cannot help,
    but another request may go through, so the step that asked can end without it."""


# ---------------------------------------------------------------------------
# litellm, imported once, lazily, quietly

_litellm = None
_litellm_lock = threading.Lock()


def _lm():
    global _litellm
    with _litellm_lock:
        if _litellm is None:
            import litellm

            litellm.suppress_debug_info = True  # the "Provider List: ..." banners
            litellm.telemetry = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx"):
                logging.getLogger(name).setLevel(logging.ERROR)
            _litellm = litellm
    return _litellm


# ---------------------------------------------------------------------------
# shared pieces


def cache_key(model: str, messages: list[dict], n: int, temperature: float, purpose: str, tag: str = "") -> str:
    request = {"model": model, "messages": messages, "n": n, "temperature": temperature, "purpose": purpose}
    if tag:  # untagged calls keep the keys they had before tags
        request["tag"] = tag
    blob = json.dumps(
        request,
        sort_keys=True,
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _log_entries(path: Path) -> list[dict]:
    """The entries of a call log (none if there is no log yet). A line a kill tore (cut mid-write,
    perhaps mid-character) is skipped: it is the one call whose reply was never used."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise LLMError(f"cannot read call log {path}: {e.strerror or e}") from None
    entries = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line.decode("utf-8", errors="replace"))
        except ValueError:
            log.debug("call log %s: line %d is not JSON (torn by a kill?); skipped", path, i)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _utf8(text: str) -> str:
    """``text`` without lone surrogates (a JSON reply's unpaired ``\\ud83d``), which cannot be written."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _served(entries: list[dict]) -> dict[str, list[str]]:
    """The replies each purpose got, in order. Cache hits and failed calls are left out: the log is
    appended across resumes, so a cache hit repeats a reply already logged when it was fresh."""
    replies: dict[str, list[str]] = {}
    for entry in entries:
        if not (entry.get("cached") or entry.get("error")):
            replies.setdefault(str(entry.get("purpose", "design")), []).extend(entry.get("completions") or [])
    return replies


def _fresh_by_key(entries: list[dict]) -> dict[str, tuple[str, list]]:
    """Each cache key's last fresh reply in the log: (purpose, completion texts)."""
    out = {}
    for entry in entries:
        texts = entry.get("completions")
        if entry.get("key") and not (entry.get("cached") or entry.get("error")) and isinstance(texts, list):
            out[str(entry["key"])] = (str(entry.get("purpose")), texts)
    return out


def _cache_read(cache_dir: Path | None, key: str) -> list[Completion] | None:
    if cache_dir is None:
        return None
    path = cache_dir / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Completion.model_validate({**c, "cached": True}) for c in data["completions"]]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable cache file %s: %s", path, e)
        return None


def _cache_write(cache_dir: Path | None, key: str, model: str, purpose: str, completions: list[Completion]) -> None:
    if cache_dir is None:
        return
    data = {"model": model, "purpose": purpose, "completions": [c.model_dump() for c in completions]}
    _write_atomic(cache_dir / f"{key}.json", json.dumps(data, ensure_ascii=False, indent=1))


class _CachedCalls:
    """What both clients do first: a call made before is answered from the cache, and logged as a hit.
    Needs ``model``, ``cache_dir``, ``usage``, ``_lock`` and ``_log``."""

    _logged_replies: dict[str, tuple[str, list]] | None = None

    def _lookup(self, messages, n, temperature, purpose, tag) -> tuple[dict, list[Completion] | None]:
        """The call's log fields (its cache key among them), and its cached reply or None."""
        key = cache_key(self.model, messages, n, temperature, purpose, tag)
        entry = dict(purpose=purpose, tag=tag, model=self.model, messages=messages, n=n, temperature=temperature,
                     key=key)
        hit = _cache_read(self.cache_dir, key)
        if hit is None and self.cache_dir is not None:
            hit = self._logged(key, n)
        if hit is not None:
            with self._lock:
                self.usage.cache_hits += 1
            self._log.write(_log_entry(**entry, completions=hit, seconds=0.0, cached=True, requests=0))
        return entry, hit

    def _logged(self, key: str, n: int) -> list[Completion] | None:
        """The reply a fresh call with this key got, from the call log: it is logged before it is
        cached, so a kill between the two leaves it only there. Restored to the cache."""
        with self._lock:
            if self._logged_replies is None:  # read once: what this process logs, it also caches
                self._logged_replies = _fresh_by_key(_log_entries(self._log.path) if self._log.path else [])
        purpose, texts = self._logged_replies.get(key, ("", []))
        if not texts or len(texts) != n:
            return None
        out = [Completion(text=str(t), model=self.model) for t in texts]
        _cache_write(self.cache_dir, key, self.model, purpose, out)
        return [c.model_copy(update={"cached": True}) for c in out]


def _write_atomic(path: Path, text: str) -> None:
    # tmp + rename in the same folder: a crash leaves the old file or the new
    # one, never half of one (a resumed run trusts what it finds).
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _CallLog:
    """Append-only JSONL, one line per complete() call (also failed and cached ones)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._checked_end = False

    def write(self, entry: dict) -> None:
        if self.path is None:
            return
        line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as f:
                if not self._checked_end:  # a line torn by an earlier kill gets its own line end
                    self._checked_end = True
                    if f.tell() and not _ends_with_newline(self.path):
                        line = "\n" + line
                f.write(line.encode("utf-8"))
                f.flush()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _log_entry(*, purpose, model, messages, n, temperature, completions, seconds, cached, requests, key=None, error=None,
               tag="") -> dict:
    # Tokens and cost say what THIS call spent: nothing for a cache hit.
    if cached:
        pt = ct = 0
        cost: float | None = 0.0
    else:
        pt = sum(c.prompt_tokens for c in completions)
        ct = sum(c.completion_tokens for c in completions)
        costs = [c.cost_usd for c in completions]
        cost = None if any(x is None for x in costs) else sum(costs)
    return {
        "time": time.time(),
        "purpose": purpose,
        "tag": tag,
        "model": model,
        "n": n,
        "temperature": temperature,
        "messages": messages,
        "completions": [c.text for c in completions],
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "cost_usd": cost,
        "seconds": round(seconds, 3),
        "cached": cached,
        "requests": requests,
        "key": key,
        "error": error,
    }


# ---------------------------------------------------------------------------
# error classification


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    # litellm prefixes "litellm.XError: XError: OpenAIException - "; keep the tail.
    if " - " in text[:120]:
        text = text.split(" - ", 1)[1]
    return text[:limit]


def _retry_after(e: BaseException) -> float | None:
    headers = getattr(getattr(e, "response", None), "headers", None)
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _classify(e: BaseException, model: str) -> Exception:
    """Map a litellm/openai exception to _Retryable (try again) or LLMError (give up).

    By status code, not class: litellm 1.106 raises BadRequestError for a 503
    and a 401 from an OpenAI-compatible server, InternalServerError for a
    refused connection and for a missing API key.
    """
    lm = _lm()
    status = getattr(e, "status_code", None)
    text = _one_line(e)
    if "missing credentials" in text.lower() or "api_key client option must be set" in text.lower():
        return LLMError(f"no API key for {model}: set the provider's key variable (e.g. OPENAI_API_KEY) ({text})")
    if isinstance(e, (lm.exceptions.AuthenticationError, lm.exceptions.PermissionDeniedError)) or status in (401, 403):
        return LLMError(f"authentication failed for {model}: {text}")
    if "connection error" in text.lower():  # refused/reset, reported by litellm as a 500
        return _Retryable(f"connection error: {text}")
    if isinstance(e, (lm.exceptions.Timeout, lm.exceptions.APIConnectionError)):
        return _Retryable(f"{type(e).__name__}: {text}")
    if isinstance(e, lm.exceptions.RateLimitError) or status in (408, 409, 429) or (isinstance(status, int) and status >= 500):
        return _Retryable(f"HTTP {status}: {text}", _retry_after(e))
    if isinstance(e, lm.exceptions.ContextWindowExceededError):
        return RequestRefused(f"prompt too long for {model}: {text}")
    if status is not None:
        return RequestRefused(f"request rejected by {model} (HTTP {status}): {text}")
    if isinstance(e, (ConnectionError, TimeoutError, OSError)):
        return _Retryable(f"{type(e).__name__}: {text}")
    return LLMError(f"{model}: {type(e).__name__}: {text}")


# ---------------------------------------------------------------------------
# the real client


class LLMClient(_CachedCalls):
    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        cache_dir: Path | None = None,
        log_path: Path | None = None,
        deadline_s: float = 180.0,
        max_retries: int = 5,
        temperature: float = 1.0,
        prices: tuple[float, float] | None = None,  # USD per 1M prompt / completion tokens
        backoff_s: float = 1.0,  # first retry delay; doubles each retry (tests shrink it)
        max_backoff_s: float = 30.0,
        timeout_s: float | None = None,  # litellm's per-request backstop; default: the deadline
    ):
        if not model:
            raise LLMError(f"no model configured: pass --model or set {MODEL_ENV}")
        self.model = model
        self.api_base = api_base.rstrip("/") if api_base else None
        self.api_key = api_key
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.deadline_s = float(deadline_s)
        self.max_retries = int(max_retries)
        self.temperature = float(temperature)
        self.prices = prices
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.usage = Usage()
        self._log = _CallLog(log_path)
        self._lock = threading.Lock()
        self._provider: tuple[str, str] | None = None  # (provider, bare model), resolved lazily
        self._supports_n: bool | None = None

    # ---- configuration checks --------------------------------------------
    def _resolve(self) -> tuple[str, str]:
        if self._provider is None:
            lm = _lm()
            try:
                bare, provider, _, _ = lm.get_llm_provider(self.model, api_base=self.api_base)
            except Exception:
                raise LLMError(
                    f"unknown model {self.model!r}: use a litellm model string such as openai/gpt-4o, "
                    "or openai/<name> with --api-base for a local OpenAI-compatible server"
                ) from None
            try:
                params = lm.get_supported_openai_params(model=bare, custom_llm_provider=provider) or []
            except Exception:
                params = []
            self._supports_n = "n" in params
            self._provider = (provider, bare)
        return self._provider

    def _effective_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        provider, _ = self._resolve()
        # Local OpenAI-compatible servers (vLLM, Ollama) ignore the key, but the
        # openai SDK refuses to send a request without one.
        if self.api_base and provider in ("openai", "hosted_vllm", "text-completion-openai") and not os.environ.get("OPENAI_API_KEY"):
            return "sk-no-key-needed"
        return None

    def check_reachable(self) -> None:
        """Fail fast with LLMError on a bad model string, a missing API key, or nothing listening at api_base."""
        provider, _ = self._resolve()
        if self.api_base:
            url = urlparse(self.api_base)
            if not url.hostname:
                raise LLMError(f"bad api_base {self.api_base!r}: expected e.g. http://127.0.0.1:8000/v1")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                socket.create_connection((url.hostname, port), timeout=3.0).close()
            except OSError as e:
                raise LLMError(f"cannot reach the LLM server at {self.api_base}: {e.strerror or e}") from None
            return
        if self.api_key:
            return
        try:
            env = _lm().validate_environment(self.model)
        except Exception:
            return  # no opinion: the first request will tell
        # Only API-key variables: litellm also lists e.g. OLLAMA_API_BASE, which has a default.
        missing = [k for k in env.get("missing_keys", []) if k.endswith("_API_KEY")]
        if missing:
            raise LLMError(f"model {self.model} needs {', '.join(missing)} in the environment (or pass an API key)")

    # ---- completions -------------------------------------------------------
    def complete(self, messages: list[dict], *, n: int = 1, purpose: str = "design", temperature: float | None = None,
                 tag: str = "") -> list[Completion]:
        """``n`` samples for ``messages``, from the cache when this exact call was answered before.

        ``tag`` says where in a run the call is made (a round, a candidate's fix):
        it is part of the cache key, so a resumed run gets each call's own reply
        back, and two places that happen to send the same prompt do not share one.
        """
        if n < 1:
            raise ValueError("n must be >= 1")
        temp = self.temperature if temperature is None else float(temperature)
        start = time.monotonic()
        entry, hit = self._lookup(messages, n, temp, purpose, tag)
        if hit is not None:
            return hit

        self._resolve()  # the first call imports litellm (~2 s): not counted against the deadline
        out: list[Completion] = []
        requests = 0
        try:
            while len(out) < n:
                # Ask for all missing samples at once where the provider takes n;
                # a server that returned fewer is then asked once per missing one,
                # each with its own deadline (one request's worth of waiting).
                ask = n - len(out) if (self._supports_n and requests == 0) else 1
                got = self._request(messages, ask, temp, time.monotonic() + self.deadline_s)
                requests += 1
                if not got:
                    raise LLMError(f"{self.model} returned no choices")
                out.extend(got[: n - len(out)])
        except BaseException as e:  # a Ctrl-C too: the samples already paid for stay counted
            self._log.write(_log_entry(**entry, completions=out, seconds=time.monotonic() - start, cached=False,
                                       requests=requests, error=str(e) or type(e).__name__))
            raise

        # The log first: a kill between the two leaves a logged reply that _lookup still finds.
        self._log.write(_log_entry(**entry, completions=out, seconds=time.monotonic() - start, cached=False,
                                   requests=requests))
        _cache_write(self.cache_dir, entry["key"], self.model, purpose, out)
        return out

    def _request(self, messages: list[dict], n: int, temperature: float, deadline: float) -> list[Completion]:
        """One logical request, retried with backoff, never past the deadline."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LLMError(f"{self.model}: no reply within the {self.deadline_s:g} s deadline")
            try:
                response = self._call_with_deadline(messages, n, temperature, remaining)
            except LLMError:
                raise
            except _Retryable as e:
                attempt += 1
                if attempt > self.max_retries:
                    raise LLMError(f"{self.model}: giving up after {attempt} attempts: {e}") from None
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2  # jitter: parallel clients don't retry in lockstep
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, self.max_backoff_s))
                if time.monotonic() + delay >= deadline:
                    raise LLMError(f"{self.model}: no reply within the {self.deadline_s:g} s deadline (last error: {e})") from None
                log.info("LLM call failed (%s); retry %d in %.1f s", e, attempt, delay)
                time.sleep(delay)
                continue
            return self._completions(response)

    def _call_with_deadline(self, messages, n, temperature, remaining: float):
        """Run litellm.completion in a thread and stop waiting when the deadline passes.

        litellm's own timeout fires late (1 s asked, 4.6 s seen), so it is only a
        backstop that lets an abandoned thread end. It is the same on every call:
        litellm keeps one HTTP client per timeout (among other keys), so a timeout
        that shrank with the deadline opened a connection per call and kept each open.
        """
        lm = _lm()
        provider, _ = self._resolve()
        kwargs: dict[str, Any] = dict(
            model=self.model,
            messages=messages,
            temperature=temperature,
            timeout=self.timeout_s or self.deadline_s,
            num_retries=0,  # retries are ours
            max_retries=0,  # ... and not the openai SDK's either
            drop_params=True,  # e.g. models that only take temperature=1
        )
        if n > 1:
            kwargs["n"] = n
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = self._effective_key()
        if key:
            kwargs["api_key"] = key

        box: dict[str, Any] = {}
        done = threading.Event()

        def run():
            try:
                box["response"] = lm.completion(**kwargs)
            except BaseException as e:  # handed to the waiting thread
                box["error"] = e
            finally:
                done.set()

        threading.Thread(target=run, name="llm-call", daemon=True).start()
        if not done.wait(remaining):
            raise LLMError(f"{self.model}: no reply within the {self.deadline_s:g} s deadline")
        if "error" in box:
            raise _classify(box["error"], self.model)
        return box["response"]

    def _completions(self, response) -> list[Completion]:
        usage = getattr(response, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self._cost(response, pt, ct)
        with self._lock:
            self.usage.calls += 1
            self.usage.prompt_tokens += pt
            self.usage.completion_tokens += ct
            if cost is None:
                self.usage.unknown_cost_calls += 1
            else:
                self.usage.cost_usd += cost
        model = getattr(response, "model", None) or self.model
        out = []
        for i, choice in enumerate(response.choices or []):
            text = getattr(getattr(choice, "message", None), "content", None) or ""
            text = _utf8(text) if isinstance(text, str) else text  # not a str: Completion refuses it
            first = i == 0
            out.append(Completion(text=text, prompt_tokens=pt if first else 0, completion_tokens=ct if first else 0,
                                  cost_usd=cost if first else (None if cost is None else 0.0), model=model))
        return out

    def _cost(self, response, pt: int, ct: int) -> float | None:
        if self.prices is not None:
            return (pt * self.prices[0] + ct * self.prices[1]) / 1e6
        try:
            cost = _lm().completion_cost(completion_response=response)
        except Exception:
            return None  # unmapped model (e.g. a local one): unknown, not an error
        return float(cost) if cost is not None else None

    # ---- cache ---------------------------------------------------------------

# ---------------------------------------------------------------------------
# replay


class ReplayClient(_CachedCalls):
    """Serves replies in order per purpose (prompts vary from run to run, so not by hash).

    ``complete(n=k)`` takes the next k replies of that purpose; running out is an LLMError.
    With ``cache_dir`` and ``log_path`` a resumed run stays in step with the file: a call
    made before is answered from the cache, and the replies the log shows served are skipped.
    """

    def __init__(self, replies: dict[str, list[str]], *, log_path: Path | None = None, cache_dir: Path | None = None,
                 model: str = "replay"):
        self.model = model
        self._queues = {str(p): deque(_utf8(str(t)) for t in texts) for p, texts in replies.items()}
        for purpose, texts in (_served(_log_entries(log_path)) if log_path else {}).items():
            for _ in range(min(len(texts), len(self._queues.get(purpose, ())))):
                self._queues[purpose].popleft()
        self._log = _CallLog(log_path)
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._lock = threading.Lock()
        self.usage = Usage()

    @classmethod
    def from_file(cls, path: Path, **kwargs) -> "ReplayClient":
        """YAML ``{purpose: [reply_text, ...]}`` (an item may itself be a list of texts)."""
        import yaml

        from .tasks import MAX_CARD_VALUES, expanded_size

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise LLMError(f"cannot read replay file {path}: {_one_line(e)}") from None
        except UnicodeDecodeError:
            raise LLMError(f"cannot read replay file {path}: not UTF-8 text") from None
        if expanded_size(data) > MAX_CARD_VALUES:  # nested aliases: billions of strings once expanded
            raise LLMError(f"replay file {path} expands to over {MAX_CARD_VALUES:,} values")
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise LLMError(f"replay file {path} must map each purpose to a list of replies")
        replies: dict[str, list[str]] = {}
        for purpose, items in data.items():
            flat: list[str] = []
            for item in items:
                flat.extend(item if isinstance(item, list) else [item])
            replies[str(purpose)] = [str(t) for t in flat]
        return cls(replies, **kwargs)

    @classmethod
    def from_log(cls, path: Path, **kwargs) -> "ReplayClient":
        """A call log written by LLMClient: the replies it got fresh, per purpose."""
        return cls(_served(_log_entries(Path(path))), **kwargs)

    def check_reachable(self) -> None:
        return None

    def complete(self, messages: list[dict], *, n: int = 1, purpose: str = "design", temperature: float | None = None,
                 tag: str = "") -> list[Completion]:
        entry, hit = self._lookup(messages, n, temperature, purpose, tag)
        if hit is not None:
            return hit
        with self._lock:
            queue = self._queues.get(purpose)
            if queue is None or len(queue) < n:
                left = 0 if queue is None else len(queue)
                raise LLMError(f"replay has no more replies for purpose {purpose!r} (asked {n}, {left} left)")
            texts = [queue.popleft() for _ in range(n)]
            self.usage.calls += 1
        out = [Completion(text=t, cost_usd=0.0, model=self.model) for t in texts]
        self._log.write(_log_entry(**entry, completions=out, seconds=0.0, cached=False, requests=1))
        _cache_write(self.cache_dir, entry["key"], self.model, purpose, out)
        return out

    def remaining(self) -> dict[str, int]:
        with self._lock:
            return {p: len(q) for p, q in self._queues.items()}


# ---------------------------------------------------------------------------


def make_client(
    model: str | None,
    *,
    api_base: str | None = None,
    replay: Path | None = None,
    cache_dir: Path | None = None,
    log_path: Path | None = None,
    prices: tuple[float, float] | None = None,
    **kwargs,
) -> LLMClient | ReplayClient:
    """The client the options ask for: a replay file/log, else a litellm model.

    ``model`` None falls back to $REWARD_DESIGNER_MODEL. Extra keyword arguments
    (api_key, deadline_s, max_retries, temperature, ...) go to LLMClient.
    """
    if replay is not None:
        replay = Path(replay)
        if not replay.exists():
            raise LLMError(f"replay file not found: {replay}")
        if replay.suffix in (".jsonl", ".log") or _looks_like_jsonl(replay):
            return ReplayClient.from_log(replay, log_path=log_path, cache_dir=cache_dir)
        return ReplayClient.from_file(replay, log_path=log_path, cache_dir=cache_dir)
    model = model or os.environ.get(MODEL_ENV) or None
    if not model:
        raise LLMError(f"no model configured: pass --model or set {MODEL_ENV}")
    return LLMClient(model, api_base=api_base, cache_dir=cache_dir, log_path=log_path, prices=prices, **kwargs)


def _looks_like_jsonl(path: Path) -> bool:
    try:
        with open(path, "rb") as f:  # one byte: decoding a whole buffer could fail on a later one
            return f.read(1) == b"{"
    except OSError:
        return False
