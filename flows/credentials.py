"""Credentials and clients a run needs, from the settings: the GitHub client (tokens, a GitHub App,
`.dlt/secrets.toml`), and GCS access for the landing (prefect-gcp blocks, a service-account file,
or application default credentials).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import dlt
from pydantic import SecretStr

from settings import Settings
from sources.github.auth import GitHubAppAuth, TokenPool
from sources.github.client import GitHubClient

logger = logging.getLogger(__name__)


def github_auth(settings: Settings, token: str | None = None, org: str | None = None) -> TokenPool | GitHubAppAuth:
    """Credentials in order of precedence: explicit token, GITHUB_TOKENS, GITHUB_TOKEN,
    `.dlt/secrets.toml`, a GitHub App (its installation, or without one `org`'s, found by the
    App); else anonymous (60 requests an hour).

    A malformed token raises InvalidCredential naming its source, never its value."""
    if token:
        return TokenPool([token], source="the token given")
    if settings.github_tokens:
        return TokenPool([t.get_secret_value() for t in settings.github_tokens], source="GITHUB_TOKENS")
    if settings.github_token:
        return TokenPool([settings.github_token.get_secret_value()], source="GITHUB_TOKEN")
    from_dlt = dlt.secrets.get("sources.github.access_token")
    if from_dlt:
        return TokenPool([str(from_dlt)], source="sources.github.access_token (.dlt/secrets.toml)")
    key = settings.github_app_private_key
    if settings.github_app_id and (settings.github_app_installation_id or org) and (
            key or settings.github_app_private_key_path):
        private_key = key.get_secret_value() if key else Path(settings.github_app_private_key_path or "").read_text()
        return GitHubAppAuth(
            settings.github_app_id,
            private_key,
            settings.github_app_installation_id,
            base_url=settings.github_url,
            org=org,
        )
    logger.warning("No GitHub credentials configured: anonymous requests get 60 an hour")
    return TokenPool([])


def github_client(settings: Settings, token: str | None = None, org: str | None = None) -> GitHubClient:
    """The client of one organisation's run (`org`: whose App installation to use, when the App
    has no fixed one)."""
    return GitHubClient(
        settings.github_url,
        github_auth(settings, token, org),
        max_concurrency=settings.max_concurrency,
        timeout=settings.request_timeout,
        max_rate_limit_wait=settings.max_rate_limit_wait,
    )


def gcs_emulator_options(settings: Settings) -> dict[str, Any]:
    """gcsfs options for a GCS emulator; else credentials come from the destination/ADC."""
    return {
        "token": "anon",
        "endpoint_url": settings.gcs_endpoint_url,
        "project": settings.gcs_project or "test",
    }


def with_gcs_blocks(settings: Settings) -> Settings:
    """The settings with the landing URL and GCS service account taken from the prefect-gcp
    block they name (GcsBucket or GcpCredentials); unchanged when they name none."""
    if not (settings.gcs_bucket_block or settings.gcs_credentials_block):
        return settings
    update: dict[str, Any] = {}
    if settings.gcs_bucket_block:
        from prefect_gcp.cloud_storage import GcsBucket

        bucket = GcsBucket.load(settings.gcs_bucket_block)
        credentials = bucket.gcp_credentials
        if not settings.landing_url:
            folder = (bucket.bucket_folder or "").strip("/")
            update["landing_url"] = f"gs://{bucket.bucket}" + (f"/{folder}" if folder else "")
    else:
        from prefect_gcp import GcpCredentials

        credentials = GcpCredentials.load(settings.gcs_credentials_block)
    if credentials.service_account_info:
        info = credentials.service_account_info.get_secret_value()
        update["gcs_service_account"] = SecretStr(json.dumps(dict(info)))
    elif credentials.service_account_file:
        update["gcs_credentials_path"] = Path(credentials.service_account_file).expanduser()
    # else: the block itself relies on application default credentials, and so do we.
    if credentials.project and not settings.gcs_project:
        update["gcs_project"] = credentials.project
    return settings.model_copy(update=update)


def service_account_json(settings: Settings) -> str | None:
    """Service-account JSON from the settings (a block's info, or a key file)."""
    if settings.gcs_service_account:
        return settings.gcs_service_account.get_secret_value()
    if settings.gcs_credentials_path:
        return settings.gcs_credentials_path.read_text()
    return None


def landing_filesystem(settings: Settings) -> Any:
    """An fsspec filesystem for the warehouse step to read a gs:// landing; None for a folder."""
    if not settings.landing.startswith("gs://"):
        return None
    import gcsfs

    if settings.gcs_endpoint_url:
        return gcsfs.GCSFileSystem(**gcs_emulator_options(settings))
    account = service_account_json(settings)
    token = json.loads(account) if account else None  # None: application default credentials
    return gcsfs.GCSFileSystem(project=settings.gcs_project, token=token)
