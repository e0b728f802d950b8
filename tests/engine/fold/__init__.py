"""Tests of engine/fold/."""
