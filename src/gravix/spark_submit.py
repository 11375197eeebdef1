"""`gravix rollup --engine spark` as a spark-submit application.

Submit this file; it takes the options of ``gravix rollup``::

    PYSPARK_PYTHON=.venv/bin/python spark-submit --master spark://host:7077 \\
        "$(python -c 'import gravix.spark_submit as m; print(m.__file__)')" \\
        --data-dir /var/lib/gravix

The session is spark-submit's: its ``--master`` and ``--conf`` apply and the
``spark_master`` / ``spark_conf`` settings do not. Exit codes are those of
``gravix rollup``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``gravix rollup --engine spark`` with ``argv`` on spark-submit's session."""
    from pyspark.sql import SparkSession

    # Made before gravix.spark.session() looks, so that it finds this one
    # instead of starting its own on the spark_master setting.
    session = SparkSession.builder.appName("gravix-rollup").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    from gravix.cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=["rollup", *args, "--engine", "spark"], prog_name="gravix-rollup")
    finally:
        session.stop()


if __name__ == "__main__":
    main()
