"""The public results page and its open data: no login, figures of closed quarters and years
built from releases only (``storage.public_results``)."""
