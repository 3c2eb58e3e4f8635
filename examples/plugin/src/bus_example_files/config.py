"""The config models: the spec that drives validation, ``bus lint`` and the JSON Schema."""

from __future__ import annotations

from integration_bus.connector import Millis
from pydantic import BaseModel, ConfigDict, Field


class FilesSourceConfig(BaseModel):
    # extra="forbid": a typo in bus.yaml is an error at its file:line, with a did-you-mean
    model_config = ConfigDict(extra="forbid", frozen=True)
    folder: str = Field(description="the inbox: *.json files dropped here (relative to the "
                                    "project dir); taken ones move to done/, bad ones to "
                                    "rejected/")
    type: str = Field(description="message type of the envelopes, e.g. order.created")
    poll_interval: Millis = Field(1000, description="how often the inbox is listed")


class FilesSinkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    folder: str = Field(description="where one JSON file per envelope is written (relative "
                                    "to the project dir)")
