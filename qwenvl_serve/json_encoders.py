"""JSON encoders built once for the request path.

``json.dumps`` with any option other than its defaults builds a new encoder on every
call, about 1 µs each time; these are built at import and hold no state between calls.
"""

from __future__ import annotations

import json

# Compact, with ASCII escapes: client text may hold a lone surrogate, which UTF-8
# cannot encode. What vLLM receives when the engine edge writes a body.
COMPACT = json.JSONEncoder(separators=(",", ":"))
# json.dumps's spacing with text as it is, for answers sent as UTF-8 (Google's format).
UNESCAPED = json.JSONEncoder(ensure_ascii=False)
