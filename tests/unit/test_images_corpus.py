"""The image core over a generated corpus of bad and odd inputs: each gets its outcome."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from PIL import Image, ImageOps

from qwenvl_serve.images import normalize as normalize_module
from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.normalize import Outcome, normalize_image
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.sample_images import synthetic_jpeg, synthetic_photo

CONFIG = ImagesConfig()


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


def with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """``jpeg`` with one more segment right after its start-of-image marker."""
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + segment + jpeg[2:]


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and has (almost) no pixel data: a bomb's header."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose frame header is patched to claim another size."""
    data = bytearray(synthetic_jpeg(64, 48, seed=9))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def transparent_png(mode: str) -> bytes:
    colour = (0, 0) if mode == "LA" else (0, 0, 0, 0)
    return encode(Image.new(mode, (64, 64), colour), "PNG")


@dataclass(frozen=True)
class Case:
    """One corpus input and what must become of it."""

    make: Callable[[], bytes]
    expected: Outcome | Reason
    size: tuple[int, int] | None = None
    config: ImagesConfig = CONFIG


def photo(width: int, height: int, seed: int = 1) -> Image.Image:
    return synthetic_photo(width, height, seed)


JPEG_640 = synthetic_jpeg(640, 480, seed=1)
XMP_ORIENTATION_6 = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)
CORPUS: dict[str, Case] = {
    # Compliant JPEGs pass byte for byte.
    "compliant_jpeg_640x480": Case(lambda: JPEG_640, Outcome.PASSTHROUGH, (640, 480)),
    "compliant_jpeg_at_the_bounds": Case(
        lambda: synthetic_jpeg(2048, 1536, seed=2), Outcome.PASSTHROUGH, (2048, 1536)
    ),
    "compliant_jpeg_not_multiple_of_32": Case(
        lambda: synthetic_jpeg(1000, 750, seed=3), Outcome.PASSTHROUGH, (1000, 750)
    ),
    "tiny_jpeg_10x10": Case(lambda: synthetic_jpeg(10, 10, seed=4), Outcome.PASSTHROUGH, (10, 10)),
    # Any metadata, even an EXIF block that says "upright", is stripped by re-encoding.
    "jpeg_orientation_tag_1": Case(
        lambda: with_orientation(photo(320, 256), 1), Outcome.CONVERTED, (320, 256)
    ),
    # Only plain baseline JPEGs pass as they are (see images/jpeg_structure.py).
    "progressive_jpeg": Case(
        lambda: encode(photo(320, 256), "JPEG", progressive=True), Outcome.CONVERTED, (320, 256)
    ),
    "jpeg_with_a_comment": Case(
        lambda: encode(photo(320, 256), "JPEG", comment=b"hello"), Outcome.CONVERTED, (320, 256)
    ),
    "jpeg_with_a_big_app_segment": Case(
        lambda: with_segment(synthetic_jpeg(320, 256, seed=2), 0xE2, b"x" * 60_000),
        Outcome.CONVERTED,
        (320, 256),
    ),
    "jpeg_with_bytes_after_its_end": Case(
        lambda: synthetic_jpeg(320, 256, seed=2)[:-2] + b"\xff\xd9junk\xff\xd9",
        Outcome.CONVERTED,
        (320, 256),
    ),
    # Too big: resized to the bounds, sides multiples of 32.
    "12mp_jpeg": Case(lambda: synthetic_jpeg(4000, 3000, seed=5), Outcome.RESIZED, (2048, 1536)),
    "12mp_portrait_jpeg": Case(
        lambda: synthetic_jpeg(3000, 4000, seed=6), Outcome.RESIZED, (1536, 2048)
    ),
    "square_over_max_pixels": Case(
        lambda: synthetic_jpeg(2048, 2048, seed=7), Outcome.RESIZED, (1760, 1760)
    ),
    "thin_png_whose_short_side_would_round_away": Case(
        lambda: encode(photo(6000, 30), "PNG"), Outcome.RESIZED, (2048, 32)
    ),
    "long_thin_panorama": Case(
        lambda: synthetic_jpeg(8000, 100, seed=8), Outcome.RESIZED, (2048, 32)
    ),
    "progressive_12mp_jpeg": Case(
        lambda: encode(photo(4000, 3000), "JPEG", quality=85, progressive=True),
        Outcome.RESIZED,
        (2048, 1536),
    ),
    # Orientation applied: stored landscape, upright portrait.
    "exif_orientation_6": Case(
        lambda: with_orientation(photo(640, 480), 6), Outcome.CONVERTED, (480, 640)
    ),
    "exif_orientation_8": Case(
        lambda: with_orientation(photo(640, 480), 8), Outcome.CONVERTED, (480, 640)
    ),
    "exif_orientation_3": Case(
        lambda: with_orientation(photo(640, 480), 3), Outcome.CONVERTED, (640, 480)
    ),
    # Orientation in XMP (no EXIF): Pillow's exif_transpose, and so vLLM, applies it too.
    "xmp_orientation_6": Case(
        lambda: encode(photo(640, 480), "JPEG", quality=90, xmp=XMP_ORIENTATION_6),
        Outcome.CONVERTED,
        (480, 640),
    ),
    "exif_orientation_6_and_too_big": Case(
        lambda: with_orientation(photo(4000, 3000), 6), Outcome.RESIZED, (1536, 2048)
    ),
    # Every mode becomes RGB.
    "cmyk_jpeg": Case(
        lambda: encode(photo(640, 480).convert("CMYK"), "JPEG"), Outcome.CONVERTED, (640, 480)
    ),
    "grayscale_jpeg": Case(
        lambda: encode(photo(640, 480).convert("L"), "JPEG"), Outcome.CONVERTED, (640, 480)
    ),
    "rgb_png": Case(lambda: encode(photo(640, 480), "PNG"), Outcome.CONVERTED, (640, 480)),
    "rgba_png_transparent": Case(lambda: transparent_png("RGBA"), Outcome.CONVERTED, (64, 64)),
    "la_png_transparent": Case(lambda: transparent_png("LA"), Outcome.CONVERTED, (64, 64)),
    "palette_png": Case(
        lambda: encode(photo(320, 256).convert("P"), "PNG"), Outcome.CONVERTED, (320, 256)
    ),
    "palette_png_with_transparency": Case(
        lambda: encode(photo(320, 256).convert("P"), "PNG", transparency=0),
        Outcome.CONVERTED,
        (320, 256),
    ),
    "16_bit_grey_png": Case(
        lambda: encode(Image.new("I;16", (320, 256), 40000), "PNG"), Outcome.CONVERTED, (320, 256)
    ),
    "1_bit_png": Case(
        lambda: encode(photo(320, 256).convert("1"), "PNG"), Outcome.CONVERTED, (320, 256)
    ),
    "webp": Case(lambda: encode(photo(640, 480), "WEBP"), Outcome.CONVERTED, (640, 480)),
    "png_not_multiple_of_32": Case(
        lambda: encode(photo(1000, 750), "PNG"), Outcome.RESIZED, (992, 736)
    ),
    "tiny_png_grows_to_one_token": Case(
        lambda: encode(photo(10, 10), "PNG"), Outcome.RESIZED, (32, 32)
    ),
    "gif_when_allowed": Case(
        lambda: encode(photo(320, 256).convert("P"), "GIF"),
        Outcome.CONVERTED,
        (320, 256),
        ImagesConfig(formats=["jpeg", "gif"]),
    ),
    "jpeg_with_trailing_bytes": Case(
        lambda: JPEG_640 + b"camera trailer", Outcome.CONVERTED, (640, 480)
    ),
    # Refused before decoding.
    "empty": Case(lambda: b"", Reason.UNDECODABLE),
    "text_not_an_image": Case(lambda: b"hello, this is not an image", Reason.UNDECODABLE),
    "html_declared_as_jpeg": Case(lambda: b"<html><body>x</body></html>", Reason.UNDECODABLE),
    "gif_by_default": Case(
        lambda: encode(photo(64, 64).convert("P"), "GIF"), Reason.UNSUPPORTED_FORMAT
    ),
    "bmp": Case(lambda: encode(photo(64, 64), "BMP"), Reason.UNSUPPORTED_FORMAT),
    "tiff": Case(lambda: encode(photo(64, 64), "TIFF"), Reason.UNSUPPORTED_FORMAT),
    "pdf_magic": Case(lambda: b"%PDF-1.7\n" + b"0" * 64, Reason.UNSUPPORTED_FORMAT),
    "heic_brand": Case(
        lambda: b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00" + b"0" * 64,
        Reason.UNSUPPORTED_FORMAT,
    ),
    "png_bomb_header_400mp": Case(lambda: png_header_only(20_000, 20_000), Reason.TOO_MANY_PIXELS),
    "png_bomb_just_over_the_limit": Case(
        lambda: png_header_only(10_000, 5_001), Reason.TOO_MANY_PIXELS
    ),
    "jpeg_declaring_65535_square": Case(
        lambda: jpeg_declaring(65_535, 65_535), Reason.TOO_MANY_PIXELS
    ),
    "over_max_bytes": Case(
        lambda: synthetic_jpeg(640, 480, seed=1),
        Reason.IMAGE_TOO_LARGE,
        None,
        ImagesConfig(max_bytes=1000),
    ),
    "aspect_ratio_250": Case(lambda: synthetic_jpeg(5000, 20, seed=2), Reason.EXTREME_ASPECT_RATIO),
    "png_zero_width": Case(lambda: png_header_only(0, 10), Reason.UNDECODABLE),
    # Refused when the pixels turn out to be broken.
    "truncated_jpeg": Case(lambda: JPEG_640[: len(JPEG_640) // 2], Reason.UNDECODABLE),
    "truncated_png": Case(
        lambda: (png := encode(photo(320, 256), "PNG"))[: len(png) // 2], Reason.UNDECODABLE
    ),
    "jpeg_magic_then_garbage": Case(lambda: b"\xff\xd8\xff" + b"\x00" * 200, Reason.UNDECODABLE),
    "png_magic_then_garbage": Case(
        lambda: b"\x89PNG\r\n\x1a\n" + b"\x07" * 200, Reason.UNDECODABLE
    ),
    "webp_riff_without_payload": Case(lambda: b"RIFF\x04\x00\x00\x00WEBP", Reason.UNDECODABLE),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_input_gets_its_expected_outcome(name: str):
    case = CORPUS[name]
    data = case.make()
    if isinstance(case.expected, Reason):
        with pytest.raises(RefusalError) as refused:
            normalize_image(data, case.config)
        assert refused.value.reason is case.expected
        return
    result = normalize_image(data, case.config)
    assert result.outcome is case.expected
    assert (result.width, result.height) == case.size
    assert result.input_bytes == len(data)
    if result.outcome is Outcome.PASSTHROUGH:
        assert result.data is data
        return
    with Image.open(io.BytesIO(result.data)) as out:
        assert (out.format, out.mode, out.size) == ("JPEG", "RGB", case.size)
        assert "exif" not in out.info
        assert "icc_profile" not in out.info
        assert out.width % 32 == 0
        assert out.height % 32 == 0


def test_the_corpus_holds_at_least_thirty_bad_or_odd_inputs():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white(mode: str):
    result = normalize_image(transparent_png(mode), CONFIG)
    with Image.open(io.BytesIO(result.data)) as out:
        assert min(out.convert("RGB").getpixel((32, 32))) >= 250  # type: ignore[arg-type]


@pytest.mark.parametrize("orientation", range(2, 9))
def test_orientation_matches_pillows_exif_transpose(orientation: int):
    # Four coloured quadrants make any wrong flip or turn visible.
    source = Image.new("RGB", (128, 64))
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]):
        x, y = (index % 2) * 64, (index // 2) * 32
        source.paste(colour, (x, y, x + 64, y + 32))
    data = with_orientation(source, orientation)
    with Image.open(io.BytesIO(data)) as original:
        expected = ImageOps.exif_transpose(original)
    result = normalize_image(data, CONFIG)
    with Image.open(io.BytesIO(result.data)) as out:
        assert out.size == expected.size
        for x, y in [
            (16, 8),
            (out.width - 16, 8),
            (16, out.height - 8),
            (out.width - 16, out.height - 8),
        ]:
            got = out.getpixel((x, y))
            want = expected.getpixel((x, y))
            assert max(abs(a - b) for a, b in zip(got, want, strict=True)) < 40  # type: ignore[arg-type]


def test_bombs_are_refused_without_decoding(monkeypatch: pytest.MonkeyPatch):
    def must_not_decode(*args: object) -> bytes:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(normalize_module, "reencode", must_not_decode)
    for name in (
        "png_bomb_header_400mp",
        "png_bomb_just_over_the_limit",
        "jpeg_declaring_65535_square",
    ):
        with pytest.raises(RefusalError) as refused:
            normalize_image(CORPUS[name].make(), CONFIG)
        assert refused.value.reason is Reason.TOO_MANY_PIXELS


def test_refusals_carry_fixed_messages_not_decoder_text():
    with pytest.raises(RefusalError) as refused:
        normalize_image(JPEG_640[:1000], CONFIG)
    error = refused.value.at("messages[0].content[1]").api_error()
    body = error.openai_body()["error"]
    assert body == {
        "message": "The image could not be decoded.",
        "type": "invalid_request_error",
        "param": "messages[0].content[1]",
        "code": "invalid_image",
    }
    assert error.status == 422
