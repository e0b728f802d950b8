"""TIDE's tests, mirroring the packages; tests/integration/ runs against the real embedded broker."""
