"""Rollup: raw facts -> deduplicated archive and minute, hourly and daily metrics."""
