"""Video input: probed, sampled and decoded in a separate worker process.

The pieces, each one idea:

- :mod:`~qwenvl_serve.video.config`: the ``video:`` config section;
- :mod:`~qwenvl_serve.video.containers`: container sniffing by magic bytes (pure);
- :mod:`~qwenvl_serve.video.sampling`: which frames, how large, how many tokens (pure);
- :mod:`~qwenvl_serve.video.worker`: the decoder process (PyAV), run once per video
  under CPU-time and memory limits;
- :mod:`~qwenvl_serve.video.pool`: the server side of the worker: bounded, timed,
  every failure a refusal;
- :mod:`~qwenvl_serve.video.engine_input`: the ``video/jpeg`` data URL and the
  timing metadata vLLM receives;
- :mod:`~qwenvl_serve.video.middleware`: the layer that puts it together per request.
"""
