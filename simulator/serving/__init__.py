"""Serving simulation: pure batching decisions plus thin simpy processes that own only time."""
