"""``python -m bench export [--rows N]``."""

from bench.export import main

main()
