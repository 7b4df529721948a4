"""Warm worker processes: pocketsphinx decoding gives the same phones as a one-off decode,
children are reused, replaced when they die and gone when idle (real synthesized speech,
real child processes)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from sonic_core.audio import phonemes
from sonic_core.workers.pool import WarmPool

from .espeak_timing import speak_with_phonemes
from .evaluate import probe_mp4

needs_pocketsphinx = pytest.mark.skipif(not phonemes.available(), reason="pocketsphinx is not installed")


@pytest.fixture
def make_pool():
    """WarmPool(...) that is closed (children and all) when the test ends."""
    made = []

    def make(*args, **kwargs):
        made.append(WarmPool(*args, **kwargs))
        return made[-1]

    yield make
    for pool in made:
        pool.close()


@pytest.fixture(scope="module")
def pcm_pieces():
    s, rate, _ = speak_with_phonemes("Bob made a map of my bay. We will meet by the mill at noon.", voice="en-us")
    x = resample_poly(np.asarray(s, np.float64), 16000, rate)
    pcm = (np.clip(x / np.abs(x).max() * 0.7, -1, 1) * 32767).astype(np.int16).tobytes()
    half = len(pcm) // 4 * 2
    return [pcm[:half], pcm[half:]]


@needs_pocketsphinx
def test_pooled_decoding_equals_a_one_off_child_and_reuses_its_children(pcm_pieces, make_pool):
    pool = make_pool(phonemes._WORKER, keep=2)
    expected = [phonemes._decode_in_child(p) for p in pcm_pieces]
    assert all(len(e) > 5 for e in expected)
    first = [phonemes.decode_piece(p, pool) for p in pcm_pieces]
    pids = {c.proc.pid for c in pool._idle}
    # the same piece again, through a child that decoded another piece before: no state carries over
    second = [phonemes.decode_piece(p, pool) for p in reversed(pcm_pieces)][::-1]
    assert first == expected and second == expected
    assert len(pids) == 1 and {c.proc.pid for c in pool._idle} == pids  # sequential use: one warm child


@needs_pocketsphinx
def test_a_dead_child_is_replaced_and_an_idle_one_exits(pcm_pieces, make_pool):
    expected = phonemes._decode_in_child(pcm_pieces[0])
    pool = make_pool(phonemes._WORKER, keep=1, idle_s=1.0)
    assert phonemes.decode_piece(pcm_pieces[0], pool) == expected
    dead = pool._idle[0]
    dead.proc.kill()
    dead.proc.wait()
    assert phonemes.decode_piece(pcm_pieces[0], pool) == expected  # seen dead when handed out: a new child
    survivor = pool._idle[0]
    assert survivor.proc.pid != dead.proc.pid
    deadline = time.monotonic() + 10
    while survivor.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivor.proc.poll() == 0  # left by itself after idle_s without work
    assert phonemes.decode_piece(pcm_pieces[0], pool) == expected


@needs_pocketsphinx
def test_a_child_that_dies_during_a_request_still_gets_the_piece_decoded(pcm_pieces, monkeypatch, make_pool):
    expected = phonemes._decode_in_child(pcm_pieces[1])
    pool = make_pool(phonemes._WORKER, keep=1)
    phonemes.decode_piece(pcm_pieces[0], pool)
    child = pool._idle[0]
    monkeypatch.setattr(child, "fresh", lambda: True)  # it passes the check, then dies
    child.proc.kill()
    child.proc.wait()
    assert phonemes.decode_piece(pcm_pieces[1], pool) == expected
    assert pool._idle == []  # the dead child was not handed back


@needs_pocketsphinx
def test_jobs_beyond_the_limit_wait_for_a_child_instead_of_starting_more(pcm_pieces, make_pool):
    expected = phonemes._decode_in_child(pcm_pieces[0])
    pool = make_pool(phonemes._WORKER, keep=1, limit=1)
    seen, results = set(), []
    original = pool._acquire

    def acquire():
        child = original()
        seen.add(child.proc.pid)
        return child

    pool._acquire = acquire
    threads = [threading.Thread(target=lambda: results.append(phonemes.decode_piece(pcm_pieces[0], pool)))
               for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == [expected] * 3 and len(seen) == 1 and pool._live == 1


def _face_frames(n: int, size: int = 256) -> np.ndarray:
    """A real photo, panned a pixel per frame: content x264 must actually code."""
    from PIL import Image

    from .conftest import EXAMPLES

    img = np.asarray(Image.open(EXAMPLES / "grace_hopper.jpg").convert("RGB").resize((size + n, size)))
    return np.stack([img[:, i:i + size] for i in range(n)])


@pytest.mark.parametrize("broken", [False, True])
def test_x264_segments_in_worker_processes_write_the_same_file_as_threads(tmp_path, monkeypatch, broken):
    from sonic_core.video import writer as writer_mod
    from sonic_core.workers import pool as pool_mod

    frames = _face_frames(60)

    def write(name, processes):
        out = tmp_path / name
        with writer_mod.Mp4Writer(out, 256, 256, 25, workers=3, segment_frames=16, processes=processes,
                                  encode_ahead=True) as w:
            for k in range(0, len(frames), 16):
                w.write(frames[k:k + 16])
        return out.read_bytes()

    threads = write("threads.mp4", False)
    if broken:  # a worker that cannot start: the segments are encoded in threads instead
        monkeypatch.setattr(writer_mod, "_X264_SCRIPT", str(tmp_path / "missing.py"))
    procs = write("processes.mp4", True)
    assert procs == threads
    info = probe_mp4(tmp_path / "processes.mp4")
    assert info["video_frames"] == 60
    if not broken:
        pool = pool_mod.warm_pool(writer_mod._X264_SCRIPT, keep=3)
        assert 1 <= len(pool._idle) <= 3 and all(c.proc.poll() is None for c in pool._idle)


def test_a_failed_request_is_reported_and_the_next_one_gets_a_new_child(make_pool):
    from sonic_core.video import writer as writer_mod
    from sonic_core.workers import x264_segment
    from sonic_core.workers.pool import WorkerError

    frames = _face_frames(4, size=64)
    spec = {"codec": "libx264", "width": 64, "height": 64, "fps": [25, 1], "threads": 1,
            "options": {"crf": "18", "preset": "veryfast"}, "kind": "rgb"}
    pool = make_pool(writer_mod._X264_SCRIPT, keep=1)
    with pytest.raises(WorkerError, match="no_such_codec"):
        pool.call([x264_segment.pack_request({**spec, "codec": "no_such_codec"})] + list(frames))
    assert pool._idle == [] and pool._live == 0  # the child that failed is not handed out again
    packets, extradata = x264_segment.unpack_reply(pool.call([x264_segment.pack_request(spec)] + list(frames)))
    assert len(packets) == 4 and packets[0].is_keyframe and extradata


def test_a_short_clip_is_cut_into_no_more_pieces_than_warm_decoders_between_words():
    """15 s of real speech on an 8-core machine: exactly KEEP_WARM pieces (a fifth would wait
    for a cold child), of similar length, each cut in a quiet 10 ms (between words)."""
    text = ("Bob made a map of my bay, and we will meet by the mill at noon. The weather is lovely today, "
            "so we might go boating on the lake after lunch, if the wind stays calm and the sky stays clear.")
    s, rate, _ = speak_with_phonemes(text, voice="en-us", speed=125)
    x = resample_poly(np.asarray(s, np.float64), 16000, rate).astype(np.float32)
    assert 14.5 < x.size / 16000 < 20
    n = phonemes.piece_count(x.size / 16000, workers=8, piece_s=30.0, min_piece_s=4.0)
    assert n == phonemes.KEEP_WARM
    cuts = phonemes._cut_points(x, n)
    lengths = np.diff(cuts) / 16000
    assert len(lengths) == n and lengths.max() < 1.35 * lengths.min()
    hop = 160
    energy = np.convolve(x ** 2, np.ones(hop), mode="valid")[::hop]
    for c in cuts[1:-1]:
        assert np.sum(x[c: c + hop] ** 2) <= np.percentile(energy, 25)
    # Longer clips use more of the cores; 10 minutes are never held in one 30 s+ piece.
    assert phonemes.piece_count(61.0, 8, 30.0, 4.0) == 8
    assert phonemes.piece_count(600.0, 8, 30.0, 4.0) == 20
    assert phonemes.piece_count(15.0, 2, 30.0, 4.0) == 2


def test_encoders_warmed_when_the_frame_size_is_known_are_the_ones_the_writer_uses(tmp_path):
    """generate() starts the x264 helpers right after the face stage (a first job's helpers then
    load while the renderer is built); the writer must use those, not start others."""
    from sonic_core.video import writer as writer_mod
    from sonic_core.workers.pool import warm_pool

    pool = warm_pool(writer_mod._X264_SCRIPT, keep=2)
    pool.close()  # none idle, whatever ran before
    writer_mod.warm_encoders(256, 256, "libx264", workers=2)
    warmed = {c.proc.pid for c in pool._idle}
    assert len(warmed) == 2
    frames = _face_frames(32)
    with writer_mod.Mp4Writer(tmp_path / "w.mp4", 256, 256, 25, workers=2, segment_frames=16, encode_ahead=True) as w:
        w.write(frames)
    assert {c.proc.pid for c in pool._idle} == warmed
    assert probe_mp4(tmp_path / "w.mp4")["video_frames"] == 32
    writer_mod.warm_encoders(256, 256, "libx264", workers=1)  # one instance: no helper needed
    assert {c.proc.pid for c in pool._idle} == warmed
