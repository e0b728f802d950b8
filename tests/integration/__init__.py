"""Integration tests: real workers against the real embedded broker and RocksDB."""
