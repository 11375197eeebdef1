"""The Spark session the Spark engines (rollup and query) share.

PySpark is an optional extra (``pip install 'gravix[spark]'``) and needs Java
17 or newer. Under ``spark-submit`` the session already exists and its
settings come from the command line; otherwise Gravix starts one on
``spark_master`` with ``spark_conf``. Times are UTC in every engine.

A master on the loopback address (``spark://127.0.0.1:7077``: a standalone
cluster on this machine, docs/scale.md) makes the driver listen and answer
there too, unless ``spark_conf`` says otherwise: Spark would otherwise
advertise the first non-loopback address it finds.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gravix.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# What Gravix needs of any session, whoever started it.
REQUIRED_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.driver.memory": "2g",
    # The driver's JVM compiles with C1 only: a pass plans many short queries, and the
    # C2 compiler's work never paid for itself (a 100k-fact pass on local[2]: 71 s of
    # CPU with it, 44 s without; bench/README.md, "Spark"). A long backfill on local[N],
    # whose executor is this JVM, may want it back: set spark.driver.extraJavaOptions.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
}
LOOPBACK_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
_LOOPBACK_MASTER = re.compile(r"spark://(127\.\d+\.\d+\.\d+|localhost)(:\d+)?")
_lock = threading.Lock()


def session(
    master: str = "local[2]", conf: Mapping[str, str] | None = None, app: str = "gravix"
) -> SparkSession:
    """The active Spark session, or a new one on ``master``.

    A missing PySpark or Java is a :class:`ConfigError` (one line, exit 2),
    never a traceback.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError(
            "the Spark engine needs PySpark: pip install 'gravix[spark]' (and Java 17+)"
        ) from None
    with _lock:
        active = SparkSession.getActiveSession()
        if active is None:
            if shutil.which("java") is None and not _java_home():
                raise ConfigError("the Spark engine needs Java 17 or newer on PATH or JAVA_HOME")
            builder: Any = SparkSession.builder.master(master).appName(app)
            local = LOOPBACK_CONF if _LOOPBACK_MASTER.fullmatch(master) else {}
            for key, value in {**DEFAULT_CONF, **local, **(conf or {}), **REQUIRED_CONF}.items():
                builder = builder.config(key, value)
            active = builder.getOrCreate()
            active.sparkContext.setLogLevel("ERROR")
        for key, value in REQUIRED_CONF.items():
            active.conf.set(key, value)
        return active


def _java_home() -> bool:
    import os

    home = os.environ.get("JAVA_HOME")
    return bool(home) and os.path.exists(os.path.join(home or "", "bin", "java"))
