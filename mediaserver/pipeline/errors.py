"""Errors shared by every pipeline stage."""

from __future__ import annotations


class ModelLoadError(Exception):
    """A backend could not load its model; the message names backend and path."""
