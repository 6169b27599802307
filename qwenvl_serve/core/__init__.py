"""The request core: one view of each inference request, read once, under every layer.

- :mod:`~qwenvl_serve.core.families`: each client API and its translation to vLLM's.
- :mod:`~qwenvl_serve.core.intake`: reads and parses the body once, builds the view.
- :mod:`~qwenvl_serve.core.view`: the view inner layers read and change.
- :mod:`~qwenvl_serve.core.cost`: the cost fields, read the way vLLM reads them.
- :mod:`~qwenvl_serve.core.engine_edge`: the view becomes vLLM's request, once.
- :mod:`~qwenvl_serve.core.responses`: vLLM's answers, read once for every layer.
- :mod:`~qwenvl_serve.core.sse`: the one Server-Sent Events parser.

The layer order and where a new layer or API family goes: :mod:`qwenvl_serve.middleware`.
"""
