"""Thin adapters from wire protocols onto the dataplane."""
