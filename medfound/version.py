"""The package version, in one place (setup.py and exported modules read it)."""
__version__ = "0.2.0"
