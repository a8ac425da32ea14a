"""Errors raised by the GitHub client.

Each class maps to one decision the caller makes: skip (NotFoundError), stop cleanly and
resume next run (RateLimitExhausted), or fail the run (everything else).
Messages name the cause (HTTP status, URL, GitHub's message) and never contain a token.
"""

from __future__ import annotations

from datetime import datetime, timezone


class GitHubError(Exception):
    """Base class of every error the GitHub client raises."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class AuthenticationError(GitHubError):
    """401, or a 403 that is not a rate limit (missing permission): retrying cannot help."""


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
    """Any other 4xx (400, 409, 422, ...): the request itself is wrong."""
