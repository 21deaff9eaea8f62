"""Offline training package: `python -m training.<task>` trains, evaluates and exports one model version."""
