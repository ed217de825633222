"""Process-level options, read from `OPSFLOW_*` environment variables: one class for all.

Connections and secrets are Prefect blocks; what lives here is what a process needs before it
can reach a block at all: where its data and records are, who mail is from and to, and the
numbers of the jobs, the license check and maintenance. One class, so that every command
validates every setting before it creates anything (a bad `OPSFLOW_JOB_SLOTS` stops
`opsflow db upgrade` too), and a bad value is one line naming the variable. This module
imports nothing from the areas that use it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A mail address as SMTP takes it; local names such as ops@localhost are fine on one machine.
Address = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[^@\s]+@[^@\s]+$")]


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line that names it."""


DEFAULT_LICENSE_WARNING_DAYS = (30, 14, 7, 1)


def normalize_steps(items: object) -> tuple[int, ...]:
    """Day steps (warnings, reminders) as distinct whole days >= 0, largest first."""
    try:
        steps = {int(str(item).strip()) for item in items if str(item).strip()}  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"warning days {items!r} are not whole numbers such as 30,14,7,1") from None
    if any(step < 0 for step in steps):
        raise ValueError(f"warning days {sorted(steps)} include a negative number")
    return tuple(sorted(steps, reverse=True))


def _day_list(value: object) -> object:
    """`30,14,7` or `[30, 14, 7]` from the environment; anything else as given."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a JSON list of days") from None
        return text.split(",")
    return value


class OpsflowSettings(BaseSettings):
    """Every `OPSFLOW_*` setting, in sections: places, mail, the local server, jobs, license,
    maintenance."""

    model_config = SettingsConfigDict(env_prefix="OPSFLOW_", extra="ignore")

    # --- places ----------------------------------------------------------------------------

    data_dir: Path = Field(
        default=Path("data"),
        description="Folder for the local record store, the local Prefect server and results.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the record store; default: SQLite under data_dir.",
    )
    # --- mail --------------------------------------------------------------------------------
    mail_from: Address = Field(
        default="opsflow@localhost",
        description="From address of every mail opsflow sends.",
    )
    ops_email: Address = Field(
        default="ops@localhost",
        description="Where operational alerts go (license, stuck mails, failed transfers).",
    )
    # --- the local Prefect server of `opsflow up` ---------------------------------------------
    prefect_host: str = Field(default="127.0.0.1", description="Host of the local Prefect server.")
    prefect_port: int = Field(default=4200, ge=1, le=65535, description="Port of the local server.")
    # 0 is "the port after the Prefect server's": stable for a data folder served on the same
    # port, and distinct for every `opsflow up` on its own Prefect port (tests, several demos).
    demo_smtp_port: int = Field(
        default=0, ge=0, le=65535,
        description="Loopback port of the demo mail sink of `opsflow up`; 0: "
        "OPSFLOW_PREFECT_PORT + 1.")
    stop_grace_seconds: float = Field(
        default=30, ge=0, le=3600,
        description="Ctrl-C: how long runs in flight may finish before they are cancelled.")
    # --- jobs ----------------------------------------------------------------------------------
    job_slots: int = Field(
        default=10, ge=1, le=1000,
        description="Slots of the opsflow-jobs limit: ordinary runs beside each other; an "
        "exclusive run takes them all.",
    )

    # --- license -------------------------------------------------------------------------------
    license_warning_days: Annotated[tuple[int, ...], NoDecode] = Field(
        default=DEFAULT_LICENSE_WARNING_DAYS,
        description="Days before expiry at which OPS is warned, e.g. 30,14,7,1.",
    )

    # --- maintenance: retention, cleaning, statistics, the notification sweeper ---------------
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
        if not self.demo_smtp_port:
            # 65535 has no port after it: the one before it, then.
            self.demo_smtp_port = self.prefect_port + 1 if self.prefect_port < 65535 else 65534
        return self

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.prefect_host}:{self.prefect_port}/api"

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

    @field_validator("expiry_reminder_days", "license_warning_days", mode="before")
    @classmethod
    def _day_steps(cls, value: object) -> tuple[int, ...]:
        return normalize_steps(_day_list(value))


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
