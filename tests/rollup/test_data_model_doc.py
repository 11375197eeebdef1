"""The DuckDB recipe in docs/data-model.md runs and agrees with the sketch module."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

from gravix.rollup.job import RollupJob
from gravix.schema import sketch
from gravix.storage.local import LocalObjectStore
from tests.rollup.conftest import fact, put_raw

DOC = Path(__file__).parents[2] / "docs" / "data-model.md"


def test_the_p95_recipe_matches_the_sketch(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    latencies = [round(1.5**i % 997, 3) + 0.5 for i in range(300)]
    put_raw(store, "demo", [fact(i, latency_ms=ms) for i, ms in enumerate(latencies)])
    RollupJob(store).run()
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    code = code.replace('"gravix-demo/store"', repr(str(store.root)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(DOC), "exec"), {})
    want = sketch.quantile(sketch.build(round(x * 1000) / 1000 for x in latencies), 0.95)
    assert want is not None
    assert f"{round(want, 2)}" in out.getvalue(), out.getvalue()
    assert "checkout" in out.getvalue() and "300" in out.getvalue()
