"""What the three destination clients share: the HTTP pool they own, jittered backoff, Retry-After, short redacted
messages."""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from retention_pipeline.redact import redact

MESSAGE_CHARS = 300


@dataclass(frozen=True)
class Reply:
    """The final answer to one logical request after retries (`reason` set when no usable answer came)."""

    response: httpx.Response | None
    attempts: int
    reason: str | None = None
    message: str | None = None


class PooledClient:
    """Owns an httpx pool unless one is injected (tests inject the sandbox's transport); usable as a context."""

    max_retries: int
    backoff_seconds: float
    max_backoff_seconds: float

    def _init_http(
        self,
        http_client: httpx.Client | None,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        max_backoff_seconds: float,
    ) -> None:
        """The retry policy and the pool, the same for every destination client."""
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout_seconds)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _retry_wait(self, response: httpx.Response, attempt: int, reason: str, message: str) -> float | Reply:
        """Seconds to wait before retrying a throttled or failed answer (Retry-After, else backoff), or the failed
        Reply when Retry-After exceeds the cap: waiting that long would stall the whole sync."""
        delay = retry_after(response)
        if delay is not None and delay > self.max_backoff_seconds:
            cap = f"; Retry-After {delay:g}s exceeds the {self.max_backoff_seconds:g}s cap"
            return Reply(response, attempt, reason, message + cap)
        return delay if delay is not None else self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        """Exponential with jitter, so parallel runs that failed together do not retry together."""
        ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
        return ceiling * random.uniform(0.5, 1.0)


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta or HTTP date); None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def clip(message: object) -> str | None:
    """Vendor text as it may be logged and stored (ledger, run failure): vendors echo what they refused, so emails,
    phones and URL credentials are masked first, then the text is kept short."""
    return None if message is None else redact(str(message))[:MESSAGE_CHARS]
