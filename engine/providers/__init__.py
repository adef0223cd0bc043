"""Providers: the interface, the OpenAI-compatible HTTP provider, and the wrappers that add behaviour."""

from .base import Provider, Wrapper

__all__ = ["Provider", "Wrapper"]
