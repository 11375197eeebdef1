"""Gravix benchmarks, each beside a peer measured in the same run (see bench/README.md)."""
