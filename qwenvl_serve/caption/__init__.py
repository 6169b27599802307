"""``qwenvl-serve caption``: caption many images through the OpenAI-compatible API."""
