"""The base of every settings model: an unknown key is an error, not ignored.

A typo in a config file (`end_of_speach_timeout`) must fail start-up with a
line naming the key, never run with the default silently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """A pydantic model that refuses keys it does not define."""

    model_config = ConfigDict(extra="forbid")
