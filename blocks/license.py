"""The opsflow license as a Prefect block: holder, key, expiry, and where to renew it.

The key is a SecretStr (masked in the UI, never logged); the daily check needs only the
holder, the expiry and the refresh URL, which `terms()` hands to `opsflow.license`.
"""

from __future__ import annotations

from datetime import date

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks import DOCUMENTATION_URL
from opsflow.license import LicenseTerms


class License(Block):
    """Who holds the license, until when, and where a renewed one is fetched from."""

    _block_type_name = "opsflow license"
    _block_type_slug = "opsflow-license"
    _documentation_url = DOCUMENTATION_URL
    _description = "The opsflow license: checked daily; OPS is warned before it expires."

    holder: str = Field(description="Who the license is issued to.")
    key: SecretStr = Field(description="The license key.")
    expires_on: date = Field(description="Last day the license is valid (UTC).")
    refresh_url: str | None = Field(
        default=None, description="Where a renewed license may be fetched from.")

    @field_validator("holder")
    @classmethod
    def _named(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("holder must name who the license is issued to")
        return value

    def terms(self) -> LicenseTerms:
        return LicenseTerms(holder=self.holder, expires_on=self.expires_on,
                            refresh_url=self.refresh_url)
