"""``python -m bench NAME [options]``: export (the default), ingest, reports, answer_path,
dispatch; each module's ``main(argv)`` parses its own options."""

import importlib
import sys

BENCHES = ("export", "ingest", "reports", "answer_path", "dispatch")

if __name__ == "__main__":
    named = len(sys.argv) > 1 and sys.argv[1] in BENCHES
    name = sys.argv[1] if named else "export"
    importlib.import_module(f"bench.{name}").main(sys.argv[2:] if named else sys.argv[1:])
