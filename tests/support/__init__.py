"""Helpers that tests share: real servers on loopback and the data they load."""
