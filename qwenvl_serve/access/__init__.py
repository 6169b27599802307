"""Access control, rate limits, token metering and request observability."""
