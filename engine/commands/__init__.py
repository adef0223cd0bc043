"""Subcommands of the ``corpusforge`` CLI, one module each (see ``engine.cli``)."""
