"""The owner of a sampled stack (benchmarks/request_core/attribution.py)."""

from __future__ import annotations

from benchmarks.request_core.attribution import OURS, STDLIB, attribute, frame_owner

# Frames as py-spy writes them: paths relative to the import path.
LOOP = "_run_once (asyncio/base_events.py:1922)"
UVICORN = "RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:420)"
OUR_LAYER = "IntakeMiddleware.__call__ (qwenvl_serve/core/intake.py:141)"
VLLM = "AsyncLLM.generate (vllm/v1/engine/async_llm.py:612)"
JSON = "JSONDecoder.decode (json/decoder.py:337)"


def test_frames_are_owned_by_our_modules_packages_or_nobody():
    assert frame_owner(OUR_LAYER) == (OURS, "core/intake")
    assert frame_owner(VLLM) == ("vllm", None)
    assert frame_owner("f (six.py:3)") == ("six", None)
    assert frame_owner("f (/srv/venv/lib/python3.11/site-packages/six.py:3)") == ("six", None)
    assert frame_owner(JSON) is None
    assert frame_owner("dumps (json/__init__.py:231)") is None
    assert frame_owner("<module> (<frozen runpy>:88)") is None


def test_a_sample_belongs_to_its_innermost_package_frame():
    found = attribute(
        [
            f"{LOOP};{UVICORN};{OUR_LAYER};{JSON} 3",  # our intake parsing: ours
            f"{LOOP};{UVICORN};{OUR_LAYER};{VLLM};{JSON} 5",  # vLLM below our layer: vLLM's
            f"{LOOP};{UVICORN} 2",
            f"{LOOP} 1",  # the event loop on its own
            "",
        ]
    )
    assert found.samples == 11
    assert dict(found.by_owner) == {OURS: 3, "vllm": 5, "uvicorn": 2, STDLIB: 1}
    assert dict(found.ours_by_module) == {"core/intake": 3}
    assert found.our_share == 3 / 11


def test_nothing_sampled_is_no_share():
    assert attribute([]).our_share == 0.0
