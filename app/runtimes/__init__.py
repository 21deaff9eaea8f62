"""Runtimes that execute a model version: one module per runtime."""
