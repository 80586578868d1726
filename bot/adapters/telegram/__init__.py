"""The telegram channel package."""
