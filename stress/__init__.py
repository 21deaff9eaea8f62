"""Commands that attack the service as hostile clients would, and measure what it costs it:
`python -m stress.bombs`, `python -m stress.fuzz`, `python -m stress.schema`, `python -m stress.drain`."""
