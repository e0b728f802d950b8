"""Tests of engine/state/."""
