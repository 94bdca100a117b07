"""Dictionaries in and out: SAELens folders written from ours, and SAEs of other libraries read for analysis."""
