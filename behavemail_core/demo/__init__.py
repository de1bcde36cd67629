"""Demo data: fictional accounts, seven days of API metrics, and a live traffic generator.

Everything here is deterministic for a given seed and clock, so the demo and its
tests see the same personas: users that each starter rule is meant to match.
"""
