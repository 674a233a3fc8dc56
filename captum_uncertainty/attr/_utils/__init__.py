"""Shared machinery of the attribution classes: argument checks, input/baseline formatting and the
one path-integration engine. Method modules import from here, never from each other."""

__all__: list[str] = []
