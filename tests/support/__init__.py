"""Shared test harness: run a component on either backend from numpy in, numpy out."""
