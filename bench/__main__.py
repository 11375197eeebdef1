"""``python -m bench`` (what ``make bench`` runs): the ingest benchmark."""

from bench.ingest import main

raise SystemExit(main())
