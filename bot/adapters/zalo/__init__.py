"""The zalo channel package."""
