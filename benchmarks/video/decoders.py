"""Video decoder benchmark: the worker's sampling job done by each candidate decoder.

    .venv/bin/python benchmarks/video/decoders.py [--rounds 3] [--json PATH]

The job (the one ``qwenvl_serve.video.worker`` does with PyAV): given an in-memory
H.264 MP4 of duration D, return N = 2 x D frames, the first frame at or after each
target time (i + 0.5) x D / N, scaled to 480x256 RGB arrays. Candidates: PyAV decoding
forward, PyAV seeking per target, OpenCV ``VideoCapture`` the way vLLM samples, the
ffmpeg CLI (``fps`` filter, and a ``select`` filter that picks the same frames as the
others), and torchcodec.

Every measurement runs in a fresh subprocess (``--child``), so candidates share no heap:
wall and CPU time of the job (CPU of the process plus its children, for the CLI), the
import time, peak RSS of the process (VmHWM, which is ``ru_maxrss`` without the
parent's high-water mark a vfork-started child inherits; the CLI's own added) and
VmPeak (the address space the worker's ``RLIMIT_AS`` bounds). Candidates run
interleaved round by round, in an order rotated each round, with PyAV sequential
measured twice (the A/A row) to show the noise.

Which frame a decoder returned is read from the frame itself: the clips (generated here
with PyAV, libx264 ultrafast, GOP 60, 30 fps, cached under /tmp/video-bench-clips) carry
their frame number as a 16-block barcode along the top edge, with a 4-bit check, so the
seek error is measured, not taken from what the decoder reports. Each returned frame is
also compared with the synthetic frame it claims to be (mean absolute difference), which
tells a decoded frame from garbage on broken inputs.

Then the failure cases (the 30 s clip cut at 50 %, with its moov atom removed, and a
faststart copy cut at 50 %), each candidate under the worker's default address-space
limit on the largest clip, and which codecs each decodes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import itertools
import json
import math
import os
import platform
import re
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

CLIP_DIR = Path("/tmp/video-bench-clips")  # noqa: S108 - a cache the brief names
FPS = 30
GOP = 60
SAMPLE_FPS = 2  # frames sampled per second of video
OUT_W, OUT_H = 480, 256
BARCODE_BLOCKS = 16  # 12 bits of frame number and 4 check bits
STRIP_FRACTION = 0.1  # the barcode's share of the frame height
GARBAGE_MAD = 20.0  # mean absolute difference above which a frame is not the one named
CHILD_TIMEOUT_S = 300.0
FAILURE_TIMEOUT_S = 60.0
WORKER_MEMORY_MIB = 2048  # the worker's default RLIMIT_AS (video.worker_memory_mib)

Frame = npt.NDArray[np.uint8]
Decoded = tuple[list[Frame], list[float | None]]
DecodeFn = Callable[[bytes, Sequence[float]], Decoded]


@dataclass(frozen=True)
class ClipSpec:
    """A synthetic clip: its name, duration and size."""

    name: str
    seconds: int
    width: int
    height: int

    @property
    def path(self) -> Path:
        return CLIP_DIR / f"{self.name}.mp4"

    @property
    def frames(self) -> int:
        return self.seconds * FPS


CLIPS = (
    ClipSpec("30s-720p", 30, 1280, 720),
    ClipSpec("2min-720p", 120, 1280, 720),
    ClipSpec("2min-1080p", 120, 1920, 1080),
)


def sample_times(duration: float) -> list[float]:
    """The job's targets: N = 2 per second of video, at (i + 0.5) x D / N."""
    count = max(1, round(duration * SAMPLE_FPS))
    return [(i + 0.5) * duration / count for i in range(count)]


# --- The synthetic clips -------------------------------------------------------------


def _check_bits(index: int) -> int:
    return (index ^ (index >> 4) ^ (index >> 8) ^ 0b1010) & 0xF


class Renderer:
    """Frames of the synthetic clip at any size, in coordinates relative to the frame:
    scrolling stripes on a background whose colour drifts, a moving square of changing
    colour, and the frame number as a barcode across the top."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._x = np.arange(width, dtype=np.float32) / width
        self._y = np.arange(height, dtype=np.float32) / height
        self.strip = max(1, round(height * STRIP_FRACTION))
        self.side = round(height * 0.2)
        edges = [round(j * width / BARCODE_BLOCKS) for j in range(BARCODE_BLOCKS + 1)]
        self._blocks = list(itertools.pairwise(edges))

    def frame(self, index: int) -> Frame:
        """Frame ``index`` as RGB."""
        t = index / FPS
        stripes_x = 30 * np.sin(2 * np.pi * (self._x * 12 + t * 0.6))
        stripes_y = 20 * np.sin(2 * np.pi * (self._y * 5 - t * 0.4))
        texture = stripes_y[:, None] + stripes_x[None, :]
        phases = np.array([0.0, 2.1, 4.2], dtype=np.float32)
        base = 128 + 80 * np.sin(2 * np.pi * t / 10 + phases)
        image = np.empty((self.height, self.width, 3), dtype=np.uint8)
        for channel in range(3):
            image[:, :, channel] = np.clip(texture + base[channel], 0, 255)
        free_w, free_h = self.width - self.side, self.height - self.strip - self.side
        left = round(free_w * (0.5 + 0.45 * math.sin(2 * math.pi * t / 7)))
        top = self.strip + round(free_h * (0.5 + 0.45 * math.sin(2 * math.pi * t / 4.3)))
        colour = [round(127.5 + 127.5 * math.sin(2 * math.pi * t / 3 + p)) for p in (3, 1, 5)]
        image[top : top + self.side, left : left + self.side] = colour
        code = index | (_check_bits(index) << 12)
        for j, (x0, x1) in enumerate(self._blocks):
            bit = (code >> (BARCODE_BLOCKS - 1 - j)) & 1
            image[: self.strip, x0:x1] = 255 if bit else 0
        return image

    def read_index(self, frame: Frame) -> int | None:
        """The frame number in ``frame``'s barcode, or None where its check fails."""
        row = self.strip // 2
        code = 0
        for x0, x1 in self._blocks:
            centre = (x0 + x1) // 2
            patch = frame[max(0, row - 2) : row + 3, max(0, centre - 3) : centre + 4]
            code = (code << 1) | int(patch.mean() > 127)
        index = code & 0xFFF
        return index if code >> 12 == _check_bits(index) else None


def ensure_clip(spec: ClipSpec) -> Path:
    """The clip, encoded once with PyAV (libx264 ultrafast, yuv420p, GOP 60, no scene
    cuts, moov at the end) and cached."""
    if spec.path.exists():
        return spec.path
    import av

    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    partial = spec.path.with_suffix(".part.mp4")
    renderer = Renderer(spec.width, spec.height)
    started = time.perf_counter()
    with av.open(str(partial), mode="w", format="mp4") as output:
        stream = output.add_stream(
            "libx264",
            rate=FPS,
            options={"preset": "ultrafast", "x264-params": f"keyint={GOP}:scenecut=0"},
        )
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.gop_size = GOP
        for index in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(renderer.frame(index), format="rgb24")
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    partial.rename(spec.path)
    size = spec.path.stat().st_size / 1e6
    print(f"  made {spec.path} ({size:.1f} MB) in {time.perf_counter() - started:.0f} s")
    return spec.path


def top_level_boxes(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(type, offset, size) of each top-level ISO-BMFF box that fits in ``data``."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        if size < 8:
            return
        yield kind.decode("latin-1"), offset, size
        offset += size


def without_moov(data: bytes) -> bytes:
    """``data`` with its top-level moov box cut out (mdat and the rest kept whole)."""
    for kind, offset, size in top_level_boxes(data):
        if kind == "moov":
            return data[:offset] + data[offset + size :]
    raise ValueError("no moov box")


def faststart_copy(source: Path) -> Path:
    """A remux of ``source`` with the moov atom before the media data (cached)."""
    target = source.with_name(source.stem + "-faststart.mp4")
    if target.exists():
        return target
    import av

    with (
        av.open(str(source)) as inp,
        av.open(str(target), "w", format="mp4", options={"movflags": "faststart"}) as out,
    ):
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return target


def broken_inputs(clip: Path) -> dict[str, Path]:
    """The failure cases, written next to the clip: name -> file."""
    data = clip.read_bytes()
    kinds = [kind for kind, _, _ in top_level_boxes(data)]
    if kinds.index("moov") < kinds.index("mdat"):
        raise ValueError(f"{clip} has its moov first; the truncation case needs it last")
    fast = faststart_copy(clip).read_bytes()
    cases = {
        "cut at 50 % (moov at end, so no moov)": data[: len(data) // 2],
        "moov box removed (mdat whole)": without_moov(data),
        "faststart, cut at 50 % (moov kept)": fast[: len(fast) // 2],
    }
    paths = {}
    for number, (name, payload) in enumerate(cases.items()):
        path = clip.with_name(f"{clip.stem}-broken{number}.mp4")
        path.write_bytes(payload)
        paths[name] = path
    return paths


# --- The candidates ------------------------------------------------------------------


def _stream_start(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def pyav_sequential(data: bytes, targets: Sequence[float]) -> Decoded:
    """PyAV decoding forward, keeping the first frame at or after each target."""
    import av

    frames: list[Frame] = []
    times: list[float | None] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = _stream_start(stream)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            at = frame.time - start
            small: Frame | None = None
            while len(frames) < len(targets) and at >= targets[len(frames)]:
                if small is None:
                    small = _pyav_small(frame)
                frames.append(small)
                times.append(at)
            if len(frames) == len(targets):
                break
    return frames, times


def pyav_seek(data: bytes, targets: Sequence[float]) -> Decoded:
    """PyAV seeking (backward, to the keyframe) before each target, then decoding
    forward to the first frame at or after it."""
    import av

    frames: list[Frame] = []
    times: list[float | None] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = _stream_start(stream)
        time_base = stream.time_base
        for target in targets:
            container.seek(int((target + start) / time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.time is not None and frame.time - start >= target:
                    frames.append(_pyav_small(frame))
                    times.append(frame.time - start)
                    break
            else:
                break  # the stream ended before this target
    return frames, times


def _pyav_small(frame: Any) -> Frame:
    small = frame.reformat(width=OUT_W, height=OUT_H, format="rgb24", interpolation="AREA")
    array: Frame = small.to_ndarray()
    return array


def _opencv_indices(targets: Sequence[float], fps: float, count: int) -> list[int]:
    last = max(count - 1, 0)
    return [min(math.ceil(t * fps - 1e-6), last) for t in targets]


def opencv_vllm(data: bytes, targets: Sequence[float]) -> Decoded:
    """OpenCV as vLLM samples: open the video, take the frame indices from its frame
    rate, grab every frame up to the last index, retrieve the sampled ones into a
    preallocated full-resolution array (BGR to RGB), then resize them all."""
    import cv2

    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(data)
        file.flush()
        capture = cv2.VideoCapture(file.name, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ValueError("Could not open video stream")  # vLLM's own message
        try:
            return _opencv_read(capture, targets)
        finally:
            capture.release()


def opencv_stream(data: bytes, targets: Sequence[float]) -> Decoded:
    """The same, with the bytes given to OpenCV as a stream (``VideoCapture(BytesIO)``,
    as vLLM 0.32 opens them) instead of a temporary file."""
    import cv2

    # Keep the stream referenced: release() on a capture whose BytesIO is gone
    # segfaults (opencv-python-headless 5.0.0.93).
    stream = io.BytesIO(data)
    capture = cv2.VideoCapture(stream, cv2.CAP_FFMPEG, [])
    if not capture.isOpened():
        raise ValueError("Could not open video stream")
    try:
        return _opencv_read(capture, targets)
    finally:
        capture.release()


def _opencv_read(capture: Any, targets: Sequence[float]) -> Decoded:
    import cv2

    fps = capture.get(cv2.CAP_PROP_FPS)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    indices = _opencv_indices(targets, fps, count)
    wanted = set(indices)
    full = np.empty((len(wanted), height, width, 3), dtype=np.uint8)
    kept: list[int] = []
    times: list[float | None] = []
    for index in range(indices[-1] + 1):
        if not capture.grab():
            continue  # vLLM skips a frame it cannot grab
        if index in wanted:
            ok, bgr = capture.retrieve()
            if ok:
                full[len(kept)] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                kept.append(index)
                times.append(capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    resized = [
        cv2.resize(full[i], (OUT_W, OUT_H), interpolation=cv2.INTER_AREA) for i in range(len(kept))
    ]
    by_index = dict(zip(kept, zip(resized, times, strict=True), strict=True))
    frames = [by_index[i][0] for i in indices if i in by_index]
    return frames, [by_index[i][1] for i in indices if i in by_index]


def _ffmpeg_frames(data: bytes, video_filter: str, count: int) -> list[Frame]:
    """Raw RGB frames from the ffmpeg CLI reading a temporary copy of ``data`` (the mov
    demuxer needs to seek, so a pipe cannot carry an MP4 whose moov is at the end)."""
    with tempfile.NamedTemporaryFile(suffix=".mp4") as file:
        file.write(data)
        file.flush()
        command = [
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-i", file.name, "-vf", video_filter, "-frames:v", str(count),
            "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]  # fmt: skip
        done = _run_watched(command)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise FFmpegExitError(done.returncode, message[-1] if message else "")
    size = OUT_W * OUT_H * 3
    raw = np.frombuffer(done.stdout, dtype=np.uint8)
    whole = len(raw) // size
    return [raw[i * size : (i + 1) * size].reshape(OUT_H, OUT_W, 3) for i in range(whole)]


# VmHWM (peak RSS) and VmPeak of each ffmpeg CLI run in this process, in MB. Read from
# /proc while it runs: its ru_maxrss would count the parent's pages (vfork, then exec).
CLI_PEAKS: list[dict[str, float]] = []


def _run_watched(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run ``command``, collecting its output and, by polling /proc, its memory peaks."""
    peaks = {"VmHWM": 0.0, "VmPeak": 0.0}
    stop = threading.Event()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        status = Path(f"/proc/{process.pid}/status")

        def watch() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    for line in status.read_text().splitlines():
                        key = line.split(":")[0]
                        if key in peaks:
                            peaks[key] = max(peaks[key], int(line.split()[1]) / 1024)
                stop.wait(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        stdout, stderr = process.communicate()
        stop.set()
        watcher.join()
    CLI_PEAKS.append(peaks)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


class FFmpegExitError(Exception):
    """The ffmpeg CLI exited with a failure status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"exit code {code}: {message}")
        self.code = code


def ffmpeg_fps(data: bytes, targets: Sequence[float]) -> Decoded:
    """``-vf fps=2,scale=480:256:flags=area``: the fps filter's output frame k is
    stamped k / 2 s (the times reported here); which source frame it holds is read from
    the barcode."""
    step = 1 / SAMPLE_FPS
    video_filter = f"fps={SAMPLE_FPS},scale={OUT_W}:{OUT_H}:flags=area"
    frames = _ffmpeg_frames(data, video_filter, len(targets))
    return frames, [k * step for k in range(len(frames))]


def ffmpeg_select(data: bytes, targets: Sequence[float]) -> Decoded:
    """``-vf select=gte(t,(selected_n+0.5)*D/N)``: the first frame at or after each
    target (uniform targets), then the same scaling. Reports no times."""
    step = targets[1] - targets[0] if len(targets) > 1 else 2 * targets[0]
    video_filter = f"select=gte(t\\,(selected_n+0.5)*{step!r}),scale={OUT_W}:{OUT_H}:flags=area"
    frames = _ffmpeg_frames(data, video_filter, len(targets))
    return frames, [None] * len(frames)


def torchcodec_played_at(data: bytes, targets: Sequence[float]) -> Decoded:
    """torchcodec ``VideoDecoder`` (exact seek mode, FFmpeg's own thread count, resize
    in the decoder), ``get_frames_played_at(targets)``: the frame on screen at each
    target, which is the frame before it where the first at or after would be the next."""
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    decoder = VideoDecoder(
        data,
        dimension_order="NHWC",
        num_ffmpeg_threads=0,
        seek_mode="exact",
        transforms=[Resize((OUT_H, OUT_W))],
    )
    batch = decoder.get_frames_played_at(list(targets))
    array = batch.data.numpy()
    return list(array), [float(t) for t in batch.pts_seconds]


@dataclass(frozen=True)
class Candidate:
    """A decoder under test: its function and the modules it imports."""

    decode: DecodeFn
    modules: tuple[str, ...]
    note: str


CANDIDATES: dict[str, Candidate] = {
    "pyav-seq": Candidate(pyav_sequential, ("av",), "PyAV 18, decode forward"),
    "pyav-seek": Candidate(pyav_seek, ("av",), "PyAV 18, seek per target"),
    "opencv": Candidate(opencv_vllm, ("cv2",), "OpenCV, vLLM's sampling, temp file"),
    "opencv-stream": Candidate(opencv_stream, ("cv2",), "OpenCV, vLLM 0.32's BytesIO"),
    "ffmpeg-fps": Candidate(ffmpeg_fps, (), "ffmpeg CLI, -vf fps=2,scale"),
    "ffmpeg-select": Candidate(ffmpeg_select, (), "ffmpeg CLI, -vf select,scale"),
    "torchcodec": Candidate(
        torchcodec_played_at,
        ("torch", "torchcodec.decoders", "torchcodec.transforms"),
        "torchcodec, get_frames_played_at",
    ),
}
BASELINE = "pyav-seq"
AA_LABEL = "pyav-seq (A/A)"


# --- One measurement (the child process) ---------------------------------------------


def _proc_status_mb(key: str) -> float | None:
    """A memory figure of this process from /proc/self/status (VmHWM, VmPeak), in MB.

    VmHWM rather than ``ru_maxrss``: a child that Python starts with vfork and exec
    inherits its parent's high-water mark in ``ru_maxrss``, VmHWM starts afresh."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    return None


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def analyse(frames: Sequence[Frame], times: Sequence[float | None], duration: float) -> dict:
    """What the returned frames are: seek error from each frame's barcode, whether the
    decoder's reported times agree with it, and the frames that are not what they claim."""
    targets = sample_times(duration)
    renderer = Renderer(OUT_W, OUT_H)
    errors: list[float] = []
    indices: list[int | None] = []
    unreadable = garbage = time_mismatch = 0
    mad_max = 0.0
    for frame, target, reported in zip(frames, targets, times, strict=False):
        index = renderer.read_index(frame) if frame.shape == (OUT_H, OUT_W, 3) else None
        indices.append(index)
        if index is None:
            unreadable += 1
            continue
        mad = float(np.abs(frame.astype(np.int16) - renderer.frame(index)).mean())
        mad_max = max(mad_max, mad)
        garbage += mad > GARBAGE_MAD
        errors.append(abs(index / FPS - target))
        if reported is not None and abs(reported - index / FPS) > 0.5 / FPS:
            time_mismatch += 1
    return {
        "frames": len(frames),
        "expected": len(targets),
        "unreadable": unreadable,
        "garbage": garbage,
        "mad_max": mad_max,
        "seek_mean_ms": 1000 * statistics.fmean(errors) if errors else None,
        "seek_max_ms": 1000 * max(errors) if errors else None,
        "times_reported": any(t is not None for t in times),
        "time_mismatch": time_mismatch,
        "first_indices": indices[:3],
    }


def _kind(exc: BaseException) -> str:
    """An exception's type, with its module unless a builtin (``cv2.error``)."""
    kind = type(exc)
    if kind.__module__ in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def child_main(name: str, clip: Path, duration: float, memory_mib: int | None) -> None:
    """Measure one candidate on one clip in this (fresh) process; print a JSON line."""
    if memory_mib:
        limit = memory_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    candidate = CANDIDATES[name]
    record: dict[str, Any] = {"candidate": name}
    started = time.perf_counter()
    try:
        for module in candidate.modules:
            importlib.import_module(module)
    except Exception as exc:
        record["error"] = f"import: {_kind(exc)}: {exc}"[:300]
        print(json.dumps(record), flush=True)
        return
    record["import_s"] = time.perf_counter() - started
    data = clip.read_bytes()
    targets = sample_times(duration)
    record["rss_base_mb"] = _proc_status_mb("VmHWM")
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    started = time.perf_counter()
    frames: list[Frame] = []
    times: list[float | None] = []
    try:
        frames, times = candidate.decode(data, targets)
    except Exception as exc:
        record["error"] = f"{_kind(exc)}: {exc}"[:300]
    record["wall_s"] = time.perf_counter() - started
    own_after = resource.getrusage(resource.RUSAGE_SELF)
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    record["cpu_s"] = _cpu(own_after) - _cpu(own) + _cpu(children_after) - _cpu(children)
    record["cpu_child_s"] = _cpu(children_after) - _cpu(children)
    record["rss_self_mb"] = _proc_status_mb("VmHWM") or 0.0
    # ru_maxrss of children is no use either: a child started by vfork counts its
    # parent's pages (torchcodec runs ``ldconfig -p`` at import, for one). The CLI's
    # peaks come from /proc; it lives while the parent holds its output, so both count.
    cli_rss = max((p["VmHWM"] for p in CLI_PEAKS), default=0.0)
    record["cli_rss_mb"] = cli_rss
    record["cli_vm_peak_mb"] = max((p["VmPeak"] for p in CLI_PEAKS), default=0.0)
    record["rss_mb"] = record["rss_self_mb"] + cli_rss
    record["vm_peak_mb"] = _proc_status_mb("VmPeak")
    record.update(analyse(frames, times, duration))
    print(json.dumps(record), flush=True)


def measure(
    name: str,
    clip: Path,
    duration: float,
    *,
    memory_mib: int | None = None,
    timeout: float = CHILD_TIMEOUT_S,
) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its record, or how the process ended."""
    command = [sys.executable, __file__, "--child", name, str(clip), str(duration)]
    if memory_mib:
        command += ["--memory-mib", str(memory_mib)]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"candidate": name, "outcome": f"hang: killed after {timeout:.0f} s"}
    elapsed = time.perf_counter() - started
    lines = [line for line in done.stdout.decode().splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        how = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
        return {"candidate": name, "outcome": f"process died ({how}): {' '.join(tail)}"[:300]}
    record: dict[str, Any] = json.loads(lines[-1])
    record["process_s"] = elapsed
    return record


# --- The runs ------------------------------------------------------------------------


def timing_rounds(
    specs: Sequence[ClipSpec], names: Sequence[str], rounds: int
) -> list[dict[str, Any]]:
    """Every candidate on every clip, interleaved: round by round, clip by clip, the
    order of candidates rotated each round; the baseline runs twice (A/A)."""
    labels = [BASELINE, *[n for n in names if n != BASELINE], AA_LABEL]
    records = []
    for round_number in range(rounds):
        for spec in specs:
            shift = (round_number * 3) % len(labels)
            order = labels[shift:] + labels[:shift]
            for label in order:
                name = BASELINE if label == AA_LABEL else label
                record = measure(name, spec.path, spec.seconds)
                record.update(label=label, clip=spec.name, round=round_number)
                records.append(record)
                print(f"  round {round_number + 1} {spec.name:<11} {label:<15} {_brief(record)}")
    return records


def _brief(record: dict[str, Any]) -> str:
    if "wall_s" not in record:
        return str(record.get("outcome") or _tidy(record.get("error", "")))
    error = f"  ERROR {record['error']}" if record.get("error") else ""
    return (
        f"wall {record['wall_s']:.2f} s cpu {record['cpu_s']:.2f} s "
        f"rss {record['rss_mb']:.0f} MB frames {record['frames']}{error}"
    )


def failure_cases(clip: Path, duration: float, names: Sequence[str]) -> list[dict[str, Any]]:
    """Each candidate on each broken input, with a timeout that names a hang."""
    records = []
    for case, path in broken_inputs(clip).items():
        for name in names:
            record = measure(name, path, duration, timeout=FAILURE_TIMEOUT_S)
            record["case"] = case
            records.append(record)
            print(f"  {case:<40} {name:<14} {describe_failure(record)}")
    return records


def _tidy(message: str) -> str:
    """An error message without build paths and temporary file names."""
    message = " ".join(message.split())
    message = re.sub(r"/__w/\S+?\.cpp:\d+, ", "", message)
    message = re.sub(r"/io/opencv/\S+?\.cpp:\d+: ", "", message)
    return re.sub(r"/\S*/tmp\w+\.mp4", "<tmpfile>", message)


def describe_failure(record: dict[str, Any]) -> str:
    """How a run on a broken input ended, in words."""
    if "wall_s" not in record:
        return _brief(record)
    frames, expected = record["frames"], record["expected"]
    bad = record["garbage"] + record["unreadable"]
    wall = f"{record['wall_s']:.2f} s"
    if record.get("error"):
        return f"raises {_tidy(record['error'])} (after {wall})"
    if frames == 0:
        return f"no error, 0 frames (after {wall})"
    verdict = f"{bad} garbage" if bad else "all genuine"
    seek = record["seek_max_ms"]
    far = f", seek err ≤ {seek:.0f} ms" if seek is not None else ""
    return f"no error, {frames}/{expected} frames, {verdict}{far} ({wall})"


def limit_runs(spec: ClipSpec, names: Sequence[str]) -> list[dict[str, Any]]:
    """Each candidate once under the worker's default address-space limit."""
    records = []
    for name in names:
        record = measure(name, spec.path, spec.seconds, memory_mib=WORKER_MEMORY_MIB)
        record["clip"] = spec.name
        records.append(record)
        print(f"  RLIMIT_AS {WORKER_MEMORY_MIB} MiB {spec.name} {name:<14} {_brief(record)}")
    return records


def codec_support(names: Sequence[str]) -> dict[str, Any]:
    """Which codecs each candidate decodes: PyAV's ``codecs_available``, and a one-second
    clip of each codec (encoded by PyAV's bundled encoders) put through each candidate."""
    import av

    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1's banner: errors only
    wanted = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
    available = av.codecs_available
    table: dict[str, Any] = {
        "pyav_decoders": {
            codec: sorted(name for name in available if _is_decoder_for(av, name, codec))
            for codec in wanted
        },
        "clips": {},
    }
    renderer = Renderer(320, 192)
    for codec, encoder in wanted.items():
        path = CLIP_DIR / f"codec-{codec}.mp4"
        if not path.exists():
            with av.open(str(path), "w", format="mp4") as output:
                stream = output.add_stream(encoder, rate=FPS)
                stream.width, stream.height, stream.pix_fmt = 320, 192, "yuv420p"
                for index in range(FPS):
                    frame = av.VideoFrame.from_ndarray(renderer.frame(index), format="rgb24")
                    output.mux(stream.encode(frame))
                output.mux(stream.encode(None))
        results = {}
        for name in names:
            record = measure(name, path, 1.0, timeout=FAILURE_TIMEOUT_S)
            ok = record.get("frames", 0) == record.get("expected") and not record.get("error")
            results[name] = "yes" if ok else describe_failure(record)
        table["clips"][codec] = results
        print(f"  {codec}: {results}")
    return table


def _is_decoder_for(av: Any, name: str, codec: str) -> bool:
    try:
        found = av.Codec(name, "r")
    except Exception:
        return False
    if found.type != "video":
        return False
    return found.id == av.Codec(codec, "r").id


def versions() -> dict[str, str]:
    """Versions of the libraries and tools measured (from their metadata: importing
    torch here would make this process, and so the children's counters, large)."""
    found: dict[str, str] = {"python": platform.python_version()}
    for package in ("av", "opencv-python-headless", "numpy", "torch", "torchcodec"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[package] = importlib.metadata.version(package)
    with contextlib.suppress(OSError, IndexError):
        line = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()[0]
        found["ffmpeg"] = line.split()[2]
    return found


# --- The report ----------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def timing_tables(records: Sequence[dict[str, Any]], specs: Sequence[ClipSpec]) -> str:
    """One markdown table per clip: medians over the rounds, each with its ratio to the
    baseline of the same round (median, and range over the rounds), and what the frames
    were."""
    out = []
    for spec in specs:
        rows = [r for r in records if r["clip"] == spec.name and "wall_s" in r]
        base = {r["round"]: r for r in rows if r["label"] == BASELINE}
        size = spec.path.stat().st_size / 1e6
        out += [
            f"### {spec.name}: {spec.width}x{spec.height}, {spec.seconds} s, {size:.1f} MB, "
            f"{spec.seconds * SAMPLE_FPS} frames sampled\n",
            "| decoder | wall s | wall ×seq | CPU s | CPU ×seq | peak RSS MB | RSS ×seq "
            "| RSS after import MB | VmPeak MB | import s | frames | frame for 0.25 s "
            "| seek err mean / max ms | max MAD |",
            "|" + "---|" * 14,
        ]
        order = [BASELINE, AA_LABEL, *CANDIDATES]
        labels = sorted({r["label"] for r in rows}, key=order.index)
        for label in labels:
            mine = [r for r in rows if r["label"] == label]
            cells = [f"`{label}`"]
            for key, digits in (("wall_s", 2), ("cpu_s", 2), ("rss_mb", 0)):
                cells.append(f"{_median([r[key] for r in mine]):.{digits}f}")
                ratios = [r[key] / base[r["round"]][key] for r in mine if r["round"] in base]
                cells.append(_ratio_cell(ratios))
            cells.append(f"{_median([r['rss_base_mb'] for r in mine]):.0f}")
            cells.append(_vm_cell(mine))
            cells.append(f"{_median([r['import_s'] for r in mine]):.2f}")
            last = mine[-1]
            cells.append(f"{last['frames']}/{last['expected']}")
            first = last["first_indices"][0] if last["first_indices"] else None
            cells.append("n/a" if first is None else f"#{first} ({1000 * first / FPS:.0f} ms)")
            if last["seek_mean_ms"] is None:
                cells.append("n/a")
            else:
                cells.append(f"{last['seek_mean_ms']:.1f} / {last['seek_max_ms']:.1f}")
            cells.append(f"{max(r['mad_max'] for r in mine):.1f}")
            out.append("| " + " | ".join(cells) + " |")
        errors = sorted({r["error"] for r in rows if r.get("error")})
        out.extend(f"\nerror seen: {e}" for e in errors)
        out.append("")
    return "\n".join(out)


def _vm_cell(records: Sequence[dict[str, Any]]) -> str:
    peaks = [r["vm_peak_mb"] for r in records if r.get("vm_peak_mb")]
    cell = f"{_median(peaks):.0f}" if peaks else "n/a"
    cli = [r["cli_vm_peak_mb"] for r in records if r.get("cli_vm_peak_mb")]
    return f"{cell} + ffmpeg {_median(cli):.0f}" if cli else cell


def _ratio_cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return "n/a"
    if len(ratios) == 1:
        return f"{ratios[0]:.2f}"
    return f"{_median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


def failure_table(records: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """Markdown: one row per candidate, one column per broken input."""
    cases = list(dict.fromkeys(r["case"] for r in records))
    out = ["| decoder | " + " | ".join(cases) + " |", "|" + "---|" * (len(cases) + 1)]
    for name in names:
        cells = [f"`{name}`"]
        for case in cases:
            found = [r for r in records if r["case"] == case and r["candidate"] == name]
            cells.append(describe_failure(found[0]).replace("|", "/") if found else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def limit_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: each candidate under the address-space limit."""
    out = [
        "| decoder | result | wall s | CPU s | peak RSS MB | VmPeak MB |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        if "wall_s" not in r:
            out.append(f"| `{r['candidate']}` | {_brief(r)} | | | | |")
            continue
        result = f"raises {_tidy(r['error'])}" if r.get("error") else f"ok, {r['frames']} frames"
        vm = _vm_cell([r])
        out.append(
            f"| `{r['candidate']}` | {result} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['rss_mb']:.0f} | {vm} |"
        )
    return "\n".join(out)


def codec_table(support: dict[str, Any], names: Sequence[str]) -> str:
    """Markdown: which candidate decoded each codec's clip."""
    codecs = list(support["clips"])
    out = ["| decoder | " + " | ".join(codecs) + " |", "|" + "---|" * (len(codecs) + 1)]
    for name in names:
        row = [support["clips"][codec][name].replace("|", "/") for codec in codecs]
        out.append(f"| `{name}` | " + " | ".join(row) + " |")
    decoders = support["pyav_decoders"]
    out.append(
        "\nPyAV `av.codecs_available` decoders: "
        + "; ".join(f"{codec}: {', '.join(found) or 'none'}" for codec, found in decoders.items())
    )
    return "\n".join(out)


def available_candidates() -> list[str]:
    """Candidates whose library this interpreter has (torchcodec may be absent)."""
    names = []
    for name, candidate in CANDIDATES.items():
        missing = [
            m for m in candidate.modules if importlib.util.find_spec(m.split(".")[0]) is None
        ]
        if missing:
            print(f"  skipping {name}: no module {', '.join(missing)}")
            continue
        names.append(name)
    return names


def render(results: dict[str, Any]) -> str:
    """The markdown tables of whichever parts ``results`` holds."""
    report = []
    if results.get("timing"):
        clips = {r["clip"] for r in results["timing"]}
        specs = [c for c in CLIPS if c.name in clips]
        report += ["## Timing\n", timing_tables(results["timing"], specs)]
    if results.get("failures"):
        names = list(dict.fromkeys(r["candidate"] for r in results["failures"]))
        report += ["## Failures\n", failure_table(results["failures"], names), ""]
    if results.get("limits"):
        clip = results["limits"][0].get("clip", "")
        report += [f"## RLIMIT_AS {WORKER_MEMORY_MIB} MiB, {clip}\n"]
        report += [limit_table(results["limits"]), ""]
    if results.get("codecs"):
        names = list(next(iter(results["codecs"]["clips"].values())))
        report += ["## Codecs\n", codec_table(results["codecs"], names), ""]
    return "\n".join(report)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the clips, run the parts asked for, save the records, print markdown."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", nargs="*", default=[c.name for c in CLIPS])
    parser.add_argument("--candidates", nargs="*", default=None, choices=list(CANDIDATES))
    parts = ["timing", "failures", "limits", "codecs"]
    parser.add_argument("--skip", nargs="*", default=[], choices=parts)
    parser.add_argument("--json", type=Path, default=CLIP_DIR / "results.json")
    parser.add_argument(
        "--report", nargs="+", type=Path, help="only print the tables of saved records"
    )
    parser.add_argument("--child", nargs=3, metavar=("NAME", "CLIP", "DURATION"))
    parser.add_argument("--memory-mib", type=int, default=None)
    args = parser.parse_args(argv)
    if args.child:
        name, clip, duration = args.child
        child_main(name, Path(clip), float(duration), args.memory_mib)
        return 0
    if args.report:
        merged: dict[str, Any] = {}
        for path in args.report:
            merged.update(json.loads(path.read_text()))
        print(render(merged))
        return 0

    started = time.perf_counter()
    names = args.candidates or available_candidates()
    specs = [c for c in CLIPS if c.name in args.clips]
    results: dict[str, Any] = {"versions": versions(), "cpus": os.cpu_count()}
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}; {results['versions']}")
    for spec in specs:
        ensure_clip(spec)
    if "timing" not in args.skip:
        print("timing rounds")
        results["timing"] = timing_rounds(specs, names, args.rounds)
    if "failures" not in args.skip:
        print("failure cases")
        results["failures"] = failure_cases(ensure_clip(CLIPS[0]), CLIPS[0].seconds, names)
    if "limits" not in args.skip:
        print(f"address-space limit, {specs[-1].name}")
        results["limits"] = limit_runs(specs[-1], names)
    if "codecs" not in args.skip:
        print("codecs")
        results["codecs"] = codec_support(names)
    results["total_s"] = time.perf_counter() - started
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(render(results))
    print(f"total {results['total_s']:.0f} s; records in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
