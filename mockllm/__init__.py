"""The mock LLM: a real OpenAI-compatible HTTP server for the demo, tests and benchmarks.

It streams varied text at a configurable rate, reports (or omits) usage, and injects
faults chosen per request through ``[[mock key=value ...]]`` directives written in the
messages (or an ``X-Mock-Directives`` header), so one running mock serves every test.
It records every request, including when the client went away, and exposes the records
over HTTP (``/_mock/events``, ``/_mock/requests``).

This package must not import Django: it runs standalone with ``python -m mockllm``.
"""
