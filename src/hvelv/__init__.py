"""Hvelv: a self-hostable platform for sensitive health research data."""

__version__ = "0.1.0"
