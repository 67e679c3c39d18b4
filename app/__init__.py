"""The forecast service."""
