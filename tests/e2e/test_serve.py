"""The foundation end to end: the real vLLM engine behind `qwenvl-serve serve`."""

from __future__ import annotations

import base64

import httpx
import openai
import pytest
from transformers import AutoTokenizer

from qwenvl_serve.sample_images import synthetic_jpeg
from qwenvl_serve.vision_tokens import image_pad_tokens
from tests.servers import RunningServer

pytestmark = pytest.mark.e2e
MODEL = "qwen3-vl-tiny"
PROMPT = "Describe this image."


def image_message(jpeg: bytes, text: str = PROMPT) -> list[dict[str, object]]:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": text},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


@pytest.fixture(scope="module")
def client(tiny_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tiny_server.base_url}/v1", api_key="unused", max_retries=0)


def expected_prompt_tokens(model_dir, messages, width: int, height: int) -> int:
    """Text tokens of the chat template, with the single <|image_pad|> expanded by the rule."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text_tokens = len(tokenizer(text)["input_ids"])
    return text_tokens - 1 + image_pad_tokens(width, height)


def test_chat_completion_with_image_counts_tokens_by_the_qwen3_vl_rule(client, tiny_model_dir):
    messages = image_message(synthetic_jpeg(640, 480, seed=1))
    response = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    assert response.model == MODEL
    assert response.choices[0].message.role == "assistant"
    assert response.usage is not None
    assert response.usage.completion_tokens <= 8
    assert response.usage.prompt_tokens == expected_prompt_tokens(
        tiny_model_dir, messages, 640, 480
    )
    assert response.usage.prompt_tokens == 314  # 300 image pads, 2 markers, 12 text tokens


def test_streaming_yields_chunks_and_a_final_usage_chunk(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=image_message(synthetic_jpeg(640, 480, seed=2)),
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) >= 3
    final = chunks[-1]
    assert final.choices == []
    assert final.usage is not None
    assert final.usage.prompt_tokens == 314
    assert 1 <= final.usage.completion_tokens <= 16


def test_models_lists_the_served_name(client):
    assert [m.id for m in client.models.list()] == [MODEL]


def test_metrics_expose_ours_and_vllms(tiny_server: RunningServer, client):
    client.models.list()
    text = httpx.get(f"{tiny_server.base_url}/metrics", timeout=10).text
    assert 'qwenvl_requests_total{key="-",route="models",status="200"}' in text
    assert "qwenvl_build_info{" in text
    assert "vllm:prompt_tokens_total" in text


def test_every_response_carries_a_request_id(tiny_server: RunningServer):
    minted = httpx.get(f"{tiny_server.base_url}/v1/models", timeout=10)
    assert len(minted.headers["x-request-id"]) == 32
    kept = httpx.get(
        f"{tiny_server.base_url}/v1/models", headers={"X-Request-ID": "trace-42"}, timeout=10
    )
    assert kept.headers.get_list("x-request-id") == ["trace-42"]


def test_12mp_photo_is_normalized_to_fit_the_context(client):
    """Bare vLLM refuses a 4000x3000 photo (11,764 prompt tokens > 4,096; the baseline is
    measured in benchmarks/images); the image layer resizes it to 2048x1536 first."""
    response = client.chat.completions.create(
        model=MODEL, messages=image_message(synthetic_jpeg(4000, 3000, seed=3)), max_tokens=8
    )
    assert response.usage is not None
    assert response.usage.prompt_tokens == 3086  # 64x48 image pads, 2 markers, 12 text tokens
