"""The command line, a thin layer over the public API."""

#: No Python API here: the entry point is ``cauce.cli.main:main`` (pyproject's scripts).
__all__: list[str] = []
