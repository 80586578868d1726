"""``python -m bench export [--rows N]`` | ``python -m bench ingest [--results N]``."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "ingest":
    from bench.ingest import main as ingest

    ingest(sys.argv[2:])
else:
    from bench.export import main as export

    export()
