"""Definitions: the JSON format as pydantic models, its validation, and its diagram."""
