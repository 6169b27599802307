"""`qwenvl-serve bench`: a streaming load generator for OpenAI-compatible servers.

Pure cores (metrics, SLOs, schedules, SSE parsing, workloads, Markdown) are kept apart
from the thin I/O shells (the httpx client, the runner, plots, the command line).
"""
