"""Persistence: SQL models, migrations, keyed pseudonyms, coordination and exports."""
