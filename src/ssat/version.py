"""The package version, in a leaf module so that every other module can read it without a cycle."""

__version__ = "0.1.0"
