"""Process-level options, read from `OPSFLOW_*` environment variables.

Connections and secrets are Prefect blocks; what lives here is what a process needs before it
can reach a block at all: where its data and records are, and who mail is from and to.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A mail address as SMTP takes it; local names such as ops@localhost are fine on one machine.
Address = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]+@[^@\s]+$")]


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line that names it."""


class OpsflowSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPSFLOW_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data"),
        description="Folder for the local record store, the local Prefect server and results.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the record store; default: SQLite under data_dir.",
    )
    mail_from: Address = Field(
        default="opsflow@localhost",
        description="From address of every mail opsflow sends.",
    )
    ops_email: Address = Field(
        default="ops@localhost",
        description="Where operational alerts go (license, stuck mails, failed transfers).",
    )
    prefect_host: str = Field(default="127.0.0.1", description="Host of the local Prefect server.")
    prefect_port: int = Field(default=4200, ge=1, le=65535, description="Port of the local server.")
    retention_completed_hours: float = Field(
        default=24, gt=0, description="Completed flow runs are deleted after this many hours."
    )
    retention_failed_days: float = Field(
        default=14, gt=0, description="Failed and Crashed flow runs are deleted after this many days."
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "sqlite+", "postgresql:", "postgresql+")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> OpsflowSettings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'opsflow.db').resolve()}"
        return self

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.prefect_host}:{self.prefect_port}/api"

    # --- maintenance: cleaning, statistics, the notification sweeper --------------------------
    expiry_reminder_days: Annotated[tuple[int, ...], NoDecode] = Field(
        default=(28, 14, 7, 3),
        description="Days before a submission expires at which its receivers are reminded.",
    )
    unfinished_submission_hours: float = Field(
        default=24, gt=0, description="Incomplete submissions are deleted after this many hours."
    )
    sent_mail_retention_days: float = Field(
        default=14, gt=0, description="Sent mails are deleted from the outbox after this many days."
    )
    mail_stuck_hours: float = Field(
        default=48, gt=0, description="A mail still queued after this many hours is undeliverable."
    )
    statistics_timeframe_minutes: int = Field(
        default=60, ge=1, le=1440, description="Length of one statistics timeframe."
    )

    @field_validator("expiry_reminder_days", mode="before")
    @classmethod
    def _reminder_steps(cls, value: object) -> tuple[int, ...]:
        from opsflow.license import normalize_steps  # lazily: settings load before the records

        return normalize_steps(value.split(",") if isinstance(value, str) else value)


def load_settings() -> OpsflowSettings:
    """Read the settings, turning a validation error into one line naming the setting."""
    try:
        return OpsflowSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "OPSFLOW_" + str(first["loc"][0]).upper() if first["loc"] else "OPSFLOW_*"
        value = first.get("input")
        raise SettingsError(f"bad setting {name}={value!r}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> OpsflowSettings:
    """The settings of this process, read once."""
    return load_settings()
