"""Tests of streams/."""
