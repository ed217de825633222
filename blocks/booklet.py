"""Abstract booklet blocks: the per-event booklet configuration and the results area.

`BookletConfig` is what each event chooses (MEOW's per-event settings): title, heading
templates, language of the fixed texts, custom fields. `BookletResults` says where finished
booklets are kept and for how long: a local folder (optionally published under a base URL)
or a prefect-aws `S3Bucket` (whose credentials stay in that block, as SecretStr).
"""

from __future__ import annotations

from datetime import timedelta

from prefect.blocks.core import Block
from prefect_aws import S3Bucket
from pydantic import Field, model_validator

from blocks import DOCUMENTATION_URL
from opsflow.booklet.options import FIXED_TEXTS, BookletOptions, BookletOptionsError
from opsflow.booklet.results import LocalResultsArea, ResultsArea, S3ResultsArea
from opsflow.settings import get_settings


class BookletConfig(Block):
    """How one event's abstract booklet looks."""

    _block_type_name = "opsflow booklet config"
    _block_type_slug = "opsflow-booklet-config"
    _documentation_url = DOCUMENTATION_URL
    _description = ("Per-event settings of the abstract booklet: title, heading templates, "
                    "language of the fixed texts, custom fields to include.")

    title: str | None = Field(default=None,
                              description="Booklet title; empty: the event's title.")
    session_heading: str = Field(
        default="{code} {title}",
        description="Session heading; placeholders {code} {title} {date} {start} {end}.")
    contribution_heading: str = Field(
        default="{code} {title}",
        description="Contribution heading; placeholders {code} {title} {start} {end} "
        "{duration} {track} {type} {board}.")
    language: str = Field(default="en", description=f"Language of the fixed texts: "
                          f"{', '.join(sorted(FIXED_TEXTS))}.")
    custom_fields: list[str] = Field(
        default_factory=list,
        description="Contribution fields printed after the abstract, by name (Indico custom "
        "fields, or track, type, board_number, keywords).")

    pdf: bool = Field(
        default=False, description="Also a PDF beside the ODT, made by LibreOffice where it is "
        "installed on the worker; kept as long as the ODT. Minutes for thousands of "
        "contributions.")

    @model_validator(mode="after")
    def _usable(self) -> BookletConfig:
        self.options()  # a bad template or language fails when the block is saved
        return self

    def options(self) -> BookletOptions:
        try:
            return BookletOptions(
                title=self.title or None, session_heading=self.session_heading,
                contribution_heading=self.contribution_heading, language=self.language,
                custom_fields=tuple(self.custom_fields), pdf=self.pdf)
        except BookletOptionsError as exc:
            raise ValueError(str(exc)) from None


class BookletResults(Block):
    """Where finished booklets are kept, and for how long."""

    _block_type_name = "opsflow booklet results"
    _block_type_slug = "opsflow-booklet-results"
    _documentation_url = DOCUMENTATION_URL
    _description = ("The results area of abstract booklets: a local folder or an S3 bucket; "
                    "each result lives under an unguessable name until it expires.")

    folder: str | None = Field(
        default=None, description="Local folder; empty and no bucket: <data_dir>/booklets.")
    base_url: str | None = Field(
        default=None, description="URL under which a web server publishes the folder; "
        "empty: results are given as file:// URLs.")
    bucket: S3Bucket | None = Field(default=None, description="S3 bucket instead of a folder.")
    prefix: str = Field(default="booklets", description="Key prefix inside the bucket.")
    expiry_hours: float = Field(default=24.0, gt=0,
                                description="How long a result is kept (hours).")

    @property
    def expiry(self) -> timedelta:
        return timedelta(hours=self.expiry_hours)

    def area(self) -> ResultsArea:
        if self.bucket is not None:
            prefix = "/".join(p for p in (self.bucket.bucket_folder.strip("/"),
                                          self.prefix.strip("/")) if p)
            return S3ResultsArea(self.bucket.credentials.get_s3_client(),
                                 self.bucket.bucket_name, prefix)
        folder = self.folder or str(get_settings().data_dir / "booklets")
        return LocalResultsArea(folder, self.base_url)
