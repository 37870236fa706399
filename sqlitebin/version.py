"""The sqlitebin version, in one place: setup.py reads it and compiles it into the extension."""

__version__ = "0.1.0"
