"""Helpers that tests, benchmarks and tools share: real nodes and daemons, anvil, actor trees,
devices. Never imported by the running tree (tests/test_import_layers.py)."""
