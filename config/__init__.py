"""The example configuration and service files, shipped as package data."""
