"""Logs and traces: cross-cutting, imported by the API, the worker and the scheduler."""
