"""``python -m bench export [--rows N]`` | ``ingest [--results N]`` | ``reports [--units N]``."""

import sys

if len(sys.argv) > 1 and sys.argv[1] == "ingest":
    from bench.ingest import main as ingest

    ingest(sys.argv[2:])
elif len(sys.argv) > 1 and sys.argv[1] == "reports":
    from bench.reports import main as reports

    reports(sys.argv[2:])
else:
    from bench.export import main as export

    export()
