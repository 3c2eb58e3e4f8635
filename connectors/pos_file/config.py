"""The ``pos_file`` connector's config models: the spec behind validation, ``bus lint`` and the
generated JSON Schema. Paths are relative to the project dir. Each inbox has its work folders
(processing, archive, error, duplicate, refused) under a work root *outside* it, on the same file
system (files move by atomic rename): by default the folder beside the inbox named after it plus
``.work``."""

from __future__ import annotations

import re
import socket
from datetime import date, time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integration_bus.connector import Millis

__all__ = [
    "ExpectedFile",
    "InboxConfig",
    "PosFileSinkConfig",
    "PosFileSourceConfig",
    "ReadinessConfig",
    "Weekday",
]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_BUSINESS_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat")
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.+ -]{0,199}$"
FOLDER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # one path component, never '.' or '..'


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InboxConfig(_Model):
    path: str = Field(description="folder the tills drop files into")
    store: str | None = Field(None, description="the store this folder belongs to (per-store "
                                                "folders); else taken from the file name")
    work: str | None = Field(
        None, description="folder holding this inbox's work folders (processing/, archive/, "
                          "error/, duplicate/, refused/); never inside an inbox, on the inbox's "
                          "file system, not writable by the tills. Default: beside the inbox, "
                          "named after it plus '.work' (var/pos/inbox -> var/pos/inbox.work)")


class ReadinessConfig(_Model):
    """When a file counts as completely written."""

    policy: Literal["rename", "marker", "stable"] = Field(
        "rename", description="rename: the writer renames a temp file into place; marker: a "
                              "done file appears beside it; stable: size and mtime unchanged "
                              "for N polls and older than min_age")
    temp_patterns: list[str] = Field(
        default_factory=lambda: [".*", "*.tmp", "*.part", "*.partial", "*.filepart", "~*",
                                 "*.swp"],
        description="names never read (files still being written)")
    marker_suffix: str = Field(".done", min_length=1, description="marker = data name + suffix")
    stable_polls: int = Field(3, ge=2, le=100, description="identical observations in a row")
    min_age: Millis = Field(2000, description="minimum time since the last modification")


class ExpectedFile(_Model):
    """"Store S sends a file matching P by HH:MM store-local time on business days"."""

    store: str
    pattern: str = Field(description="glob on file names, e.g. 'SALES_0042_*.DAT'")
    by: time = Field(description="deadline, store-local (HH:MM)")
    timezone: str = "UTC"
    days: list[Weekday] = Field(default_factory=lambda: list(_BUSINESS_DAYS))
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use e.g. Europe/Berlin)") from exc
        return value


class PosFileSourceConfig(_Model):
    inboxes: list[InboxConfig] = Field(min_length=1)
    layout: str = Field(description="layout file, e.g. config/layouts/daily_sales.yaml")
    pattern: str = Field("*", description="glob of data file names to take")
    store_pattern: str | None = Field(
        None, description="regex with a (?P<store>...) group, searched in the file name")
    readiness: ReadinessConfig = Field(default_factory=ReadinessConfig)
    watch: Literal["inotify", "polling"] = Field(
        "inotify", description="inotify (local disks) or polling only (NFS/SMB shares)")
    rescan_interval: Millis = Field(30_000, description="full listing of every inbox, in every "
                                                        "mode (events get lost)")
    poll_interval: Millis = Field(500, description="how often files not yet ready are checked")
    window: int = Field(1000, ge=1, le=50_000, description="records per confirmed window")
    on_bad_record: Literal["dead_letter", "quarantine_file"] = Field(
        "dead_letter", description="dead_letter: the bad record becomes a dead letter and the "
                                   "rest continue; quarantine_file: all or nothing per file")
    max_bad_records: int = Field(100, ge=0, description="more bad records quarantine the file")
    max_file_size: int = Field(2 << 30, ge=1, description="bytes; larger files are refused")
    name_pattern: str = Field(SAFE_NAME, description="file names allowed (others are refused)")
    node: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                      description="this bus instance's name; its claims go to processing/NODE")
    processing_dir: str = Field("processing", pattern=FOLDER_NAME,
                                description="work folder names, inside each inbox's work root")
    archive_dir: str = Field("archive", pattern=FOLDER_NAME)
    error_dir: str = Field("error", pattern=FOLDER_NAME)
    duplicate_dir: str = Field("duplicate", pattern=FOLDER_NAME)
    refused_dir: str = Field("refused", pattern=FOLDER_NAME)
    calendar: list[ExpectedFile] = Field(default_factory=list)

    @field_validator("store_pattern", "name_pattern")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("store_pattern")
    @classmethod
    def _store_group(cls, value: str | None) -> str | None:
        if value is not None and "store" not in re.compile(value).groupindex:
            raise ValueError("store_pattern needs a named group (?P<store>...)")
        return value

    @model_validator(mode="after")
    def _timing(self) -> PosFileSourceConfig:
        if self.poll_interval <= 0 or self.rescan_interval <= 0:
            raise ValueError("poll_interval and rescan_interval must be longer than 0")
        dirs = [self.processing_dir, self.archive_dir, self.error_dir, self.duplicate_dir,
                self.refused_dir]
        if len(set(dirs)) != len(dirs):
            raise ValueError("processing, archive, error, duplicate and refused folders differ")
        return self


class PosFileSinkConfig(_Model):
    layout: str = Field(description="layout file the files are written in")
    record: str | None = Field(None, description="detail record written (default: the "
                                                 "layout's only detail record)")
    folder: str = Field(description="target folder template, e.g. var/pos-out/{store}")
    file_name: str = Field("{record}_{key}.DAT", description="file name template; fields: "
                           "payload/header values, key (from the idempotency key), date, record")
    done_suffix: str | None = Field(None, description="also write NAME+suffix once the file is "
                                                      "complete (e.g. .done)")
    fsync: bool = Field(True, description="fsync the file and folder before the rename")
