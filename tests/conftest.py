"""Fixtures shared by every test package."""

from __future__ import annotations

#: ``ray_cluster``: one multi-node Ray cluster per session (imports ray only when a test uses it).
pytest_plugins = ["tests.ray_cluster"]
