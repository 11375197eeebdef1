"""Access logs to facts: ``gravix import-logs`` and ``gravix tail-logs``.

``formats`` compiles nginx/Apache format strings (and reads JSON lines),
``routes`` turns URLs into route templates per service, ``parser`` is the hot
loop from lines to facts, ``reader`` reads files and fingerprints them,
``shipper`` posts batches to the intake in a thread, ``importer`` and
``tailer`` drive whole files and followed files, ``state`` is the tailer's
saved position. Facts go through ``POST /api/v1/facts`` like any client's.
"""
