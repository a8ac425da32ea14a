"""Typed settings of a run, from arguments, the environment and `.env`.

Environment variables: `GITHUB_TOKEN`, `GITHUB_TOKENS` (comma separated), `GITHUB_API_URL`, and
everything else as `PR_ANALYTICS_<FIELD>` (nested with `__`, e.g.
`PR_ANALYTICS_SNOWFLAKE__ACCOUNT`). The token may also come from `.dlt/secrets.toml`
(`sources.github.access_token`) or a prefect-gcp `GcpSecret` block.
"""

from __future__ import annotations

import os

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Literal

from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from destinations.config import ConfigurationError, DuckDBConfig, SnowflakeConfig, with_stage  # noqa: F401 - ConfigurationError is part of this module's interface
from destinations.working_calendar import DEFAULT as DEFAULT_CALENDAR, WorkingCalendar
from sources.github.auth import token_problem
from sources.github.names import normalise_org

PUBLIC_GITHUB = "https://api.github.com"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        hide_input_in_errors=True,  # a validation error never quotes a credential
        env_prefix="PR_ANALYTICS_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    orgs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    github_url: str = Field(
        PUBLIC_GITHUB, validation_alias=AliasChoices("github_url", "GITHUB_API_URL")
    )
    github_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("github_token", "GITHUB_TOKEN")
    )
    github_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices("github_tokens", "GITHUB_TOKENS")
    )
    # GitHub App installation auth, an alternative to tokens.
    github_app_id: str | None = None
    github_app_private_key: SecretStr | None = None
    github_app_private_key_path: Path | None = None
    github_app_installation_id: str | None = None
    # Name of a prefect-gcp GcpSecret block holding the token (used by the Prefect flow).
    github_token_secret_block: str | None = None
    # Prefix of the Prefect global concurrency limit of each credential, of which each extract
    # holds a slot (`github-api-token-{fingerprint}`, `github-api-installation-{id}`); empty for
    # none.
    github_concurrency_limit: str = "github-api"

    data_dir: Path = Path("data")
    landing_url: str | None = None  # default: <data_dir>/landing; or gs://bucket/prefix
    gcs_project: str | None = None
    gcs_credentials_path: Path | None = None  # a service-account JSON; else ADC
    gcs_endpoint_url: str | None = None  # a GCS emulator, for tests
    # prefect-gcp blocks: a GcsBucket (bucket, folder and credentials: sets the landing URL when
    # unset) or a GcpCredentials block. Resolved at the start of a flow run.
    gcs_bucket_block: str | None = None
    gcs_credentials_block: str | None = None
    gcs_service_account: SecretStr | None = None  # service-account JSON (filled from a block)

    warehouse: Literal["duckdb", "snowflake"] = "duckdb"
    duckdb: DuckDBConfig | None = None  # default: <data_dir>/warehouse.duckdb
    snowflake: SnowflakeConfig | None = None

    since: date | None = None
    max_concurrency: int = Field(16, ge=1, le=100)
    # A whole primary window plus margin: an exhausted budget is waited out by default.
    max_rate_limit_wait: float = Field(3660.0, ge=0)
    request_timeout: float = Field(30.0, gt=0)
    # Retention: the landed files of loads merged into the warehouse and older than this many
    # days are deleted after each merge (None: kept for good). See docs/deployment.md, "Retention".
    landing_retention_days: int | None = Field(None, ge=1)
    # Progress is committed (landed with its state) about every this many requests: a run that
    # dies loses at most one chunk, and a backfill resumes where the last chunk stopped.
    commit_every_requests: int = Field(1000, ge=1)
    # Reviews of pull requests updated within this many days are re-read once a day (0: never).
    reconcile_days: int = Field(7, ge=0)
    # How listed pull requests' reviews and files are fetched: `rest` (one request per list),
    # `graphql` (batched queries on the GraphQL points budget; see docs/rest-and-graphql.md),
    # `auto` (the default: GraphQL when a credential is configured, else REST; REST for the rest
    # of the run once the GraphQL endpoint refuses for a reason REST would not).
    github_api_mode: Literal["auto", "rest", "graphql"] = "auto"
    # Working calendars by organisation, "*" for every other one (default: Monday to Friday,
    # whole days, UTC): the metric views' *_working_seconds. JSON in the environment, e.g.
    # PR_ANALYTICS_WORKING_CALENDARS='{"acme": {"timezone": "Europe/Berlin", "hours": "09:00-17:00",
    # "holidays": ["2026-12-25"]}}'. See docs/metrics.md, "Working time".
    working_calendars: dict[str, WorkingCalendar] = Field(default_factory=dict)

    @field_validator("orgs", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("github_token", "github_tokens", mode="before")
    @classmethod
    def _valid_tokens(cls, value: object, info: ValidationInfo) -> object:
        """Surrounding whitespace goes; a token with whitespace or a control character inside
        (a copy-paste accident) is refused, naming the variable and position, never the value."""
        several = info.field_name == "github_tokens"
        if several and isinstance(value, str):
            value = value.split(",")
        values = value if isinstance(value, list) else [value]
        raws = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in values]
        if not all(isinstance(raw, str) for raw in raws):
            return value  # not text: the field's own type check reports it
        tokens = [raw.strip() for raw in raws if raw.strip()]
        for position, token in enumerate(tokens, start=1):
            problem = token_problem(token)
            if problem:
                where = f"GITHUB_TOKENS: token {position}" if several else "GITHUB_TOKEN: the token"
                raise ValueError(f"{where} {problem}")
        return tokens if several else (tokens[0] if tokens else None)

    @field_validator("github_app_private_key", mode="before")
    @classmethod
    def _valid_private_key(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        raw = raw.strip()
        bad = next((c for c in raw if ord(c) < 32 and c not in "\n\r\t" or ord(c) == 127), None)
        if bad is not None:
            raise ValueError(f"github_app_private_key contains a control character (U+{ord(bad):04X})")
        if raw and not (raw.startswith("-----BEGIN") and "PRIVATE KEY-----" in raw):
            raise ValueError("github_app_private_key is not a PEM private key (-----BEGIN ... PRIVATE KEY-----)")
        return raw or None

    @field_validator("github_app_id", "github_app_installation_id", mode="before")
    @classmethod
    def _valid_app_ids(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, (str, int)):
            return value
        raw = str(value).strip()
        if not (raw.isascii() and raw.replace(".", "").isalnum()) and raw:
            raise ValueError(f"{info.field_name} must be letters, digits or dots")
        return raw or None

    @field_validator("github_url")
    @classmethod
    def _valid_github_url(cls, url: str) -> str:
        """A base URL that is not http(s)://host would be retried as a network fault for minutes."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"github_url is not an http(s) URL with a host (GitHub: {PUBLIC_GITHUB}; "
                "GitHub Enterprise: https://HOST/api/v3)"
            )
        return url.strip()

    @field_validator("github_token_secret_block", mode="before")
    @classmethod
    def _no_block_when_empty(cls, name: object) -> object:
        """"" (prefect.yaml's default) means no block: the token comes from the environment."""
        return (name.strip() or None) if isinstance(name, str) else name

    @model_validator(mode="after")
    def _local_folders_usable(self) -> Settings:
        """A file where the data folder (or its landing/pipelines folder) should be fails every
        attempt the same way: refuse it here, naming the path."""
        folders = [self.data_dir, self.pipelines_dir]
        if not self.landing_url:
            folders.append(self.data_dir / "landing")
        for folder in folders:
            if folder.exists() and not folder.is_dir():
                raise ValueError(f"data_dir: {folder} is a file, not a folder")
        if self.warehouse == "duckdb" and self.duckdb_config.path.is_dir():
            raise ValueError(f"duckdb path {self.duckdb_config.path} is a folder, not a database file")
        return self

    @field_validator("orgs")
    @classmethod
    def _valid_orgs(cls, orgs: list[str]) -> list[str]:
        return list(dict.fromkeys(normalise_org(org) for org in orgs))

    @field_validator("working_calendars")
    @classmethod
    def _calendar_orgs(cls, calendars: dict[str, WorkingCalendar]) -> dict[str, WorkingCalendar]:
        return {org if org == DEFAULT_CALENDAR else normalise_org(org): calendar for org, calendar in calendars.items()}

    @field_validator("since")
    @classmethod
    def _since_not_in_future(cls, since: date | None) -> date | None:
        today = datetime.now(timezone.utc).date()
        if since is not None and since > today:
            raise ValueError(f"since {since.isoformat()} is in the future (today is {today.isoformat()} UTC)")
        return since

    @property
    def landing(self) -> str:
        return self.landing_url or str((self.data_dir / "landing").resolve())

    @property
    def pipelines_dir(self) -> Path:
        return self.data_dir / "pipelines"

    @property
    def warehouse_config(self) -> DuckDBConfig | SnowflakeConfig:
        """What `destinations.warehouse.open_warehouse` opens: the DuckDB file, or Snowflake with
        the stage derived from the landing."""
        if self.warehouse == "snowflake":
            return with_stage(self.snowflake, self.landing)
        return self.duckdb_config

    @property
    def duckdb_config(self) -> DuckDBConfig:
        """`<data_dir>/warehouse.duckdb` unless a path is set (other DuckDB settings, such as
        `PR_ANALYTICS_DUCKDB__LOCK_TIMEOUT_SECONDS`, keep the data directory's file)."""
        config = self.duckdb or DuckDBConfig()
        if "path" not in config.model_fields_set:
            config = config.model_copy(update={"path": self.data_dir / "warehouse.duckdb"})
        return config


def places_written(settings: Settings) -> list[Path]:
    """The local folders a run writes: the data folder (the report and the logs), the
    pipelines folder, the landing (unless on GCS) and the DuckDB file's folder."""
    places = [settings.data_dir, settings.pipelines_dir]
    if not settings.landing_url:
        places.append(Path(settings.landing))
    if settings.warehouse == "duckdb":
        places.append(settings.duckdb_config.path.parent)
    return list(dict.fromkeys(place.absolute() for place in places))


def unwritable(settings: Settings) -> str | None:
    """The first place a run would fail to write, as one line, or None: each folder is created,
    and a probe file written and removed in it, before anything runs."""
    for place in places_written(settings):
        probe = place / f".write-probe-{os.getpid()}"
        try:
            place.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"probe")
            probe.unlink()
        except OSError as error:
            where = error.filename or place
            return f"cannot write {where}: {error.strerror or type(error).__name__} (the run writes to {place})"
    return None


def one_line(exc: Exception) -> str:
    """A settings error as one line naming each setting and its problem (pydantic's own text
    spans several lines and links to its docs)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where and not message.startswith(where) else message)
    return "; ".join(parts)


def pipeline_name(org: str) -> str:
    """One dlt pipeline (and schema) per organisation: `github_<org>`."""
    return "github_" + normalise_org(org).replace("-", "_")
