"""The web channel package."""
