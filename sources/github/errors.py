"""Errors raised by the GitHub client.

Each class maps to one decision the caller makes: skip (NotFoundError), stop cleanly and
resume next run (RateLimitExhausted), or fail the run (everything else).
Messages name the cause (HTTP status, URL, GitHub's message) and never contain a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone


class GitHubError(Exception):
    """Base class of every error the GitHub client raises."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class AuthenticationError(GitHubError):
    """401, or a 403 that is not a rate limit (missing permission): retrying cannot help."""


class InvalidCredential(AuthenticationError):
    """A credential that cannot be sent (whitespace or a control character inside it); the
    message names where it came from and its position, never its value."""


class NotFoundError(GitHubError):
    """404/410: the repository or pull request is gone or invisible; the source skips it."""


class RateLimitExhausted(GitHubError):
    """Every credential is out of budget and the reset is further away than we may wait."""

    def __init__(self, reset_at: float, message: str | None = None, *, url: str | None = None) -> None:
        self.reset_at = reset_at
        when = datetime.fromtimestamp(reset_at, tz=timezone.utc).isoformat(timespec="seconds")
        super().__init__(message or f"GitHub rate limit exhausted until {when}", url=url)


class GitHubServerError(GitHubError):
    """5xx, network failure or unreadable body that persisted through all retries."""


class GitHubClientError(GitHubError):
    """Any other 4xx (400, 409, 422, 451, ...) or a request HTTP forbids: the request itself is
    wrong; `status` tells which (451: access to the repository is blocked for legal reasons)."""


REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret replaced by `***`, also where it appears escaped as in a repr
    (httpx quotes an illegal header value as `b'Bearer ...\\n...'`)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        escaped = repr(secret)[1:-1]
        as_bytes = repr(secret.encode("utf-8", "backslashreplace"))[2:-1]
        for form in dict.fromkeys((secret, escaped, as_bytes)):
            text = text.replace(form, REDACTED)
    return text
