"""Google-style generateContent API, translated in-process to chat completions."""
