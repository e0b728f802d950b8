"""Tests of engine/offline/."""
