"""Subcommands of the ``corpusforge`` CLI, one module each (see ``engine.cli``)."""

__all__: list[str] = []
