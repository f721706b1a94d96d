"""Frames and tags from TTS chunks; heard text from the tags that were sent."""

import numpy as np

from mediaserver.call.voicing import CUT_MARK, Voicing
from mediaserver.pipeline.tts.base import TtsChunk

TEXT = "Your order has shipped today."


def _chunks(rate: int) -> tuple[TtsChunk, ...]:
    # Five words of 0.1 s each (at `rate`), spans as a word-timed backend gives them.
    spans = [(0, 4), (5, 10), (11, 14), (15, 22), (23, 28)]
    return tuple(
        TtsChunk(np.full(rate // 10, i + 1, dtype=np.int16), s, e)
        for i, (s, e) in enumerate(spans)
    )


def test_frames_are_exact_and_cover_the_audio() -> None:
    v = Voicing(1, 8000, 160)
    frames = v.add(_chunks(8000), 8000, 0) + v.finish()
    assert all(len(pcm) == 160 for pcm, _ in frames)
    assert len(frames) == 25  # 0.5 s at 20 ms
    assert [tag.index for _, tag in frames] == list(range(25))
    assert frames[-1][1].heard_end == 28 and frames[-1][1].partial is None


def test_heard_text_stops_at_the_last_sent_frame() -> None:
    v = Voicing(1, 8000, 160)
    frames = v.add(_chunks(8000), 8000, 0) + v.finish()
    # Word 1 = frames 0-4, word 2 = 5-9, ... Send 12 frames: two words and a bit.
    for _, tag in frames[:12]:
        v.sent(tag)
    heard, cut = v.heard(TEXT)
    assert cut == "has"
    assert heard == "Your order has" + CUT_MARK
    assert not v.all_sent


def test_heard_on_a_word_boundary_has_no_cut_word() -> None:
    v = Voicing(1, 8000, 160)
    frames = v.add(_chunks(8000), 8000, 0) + v.finish()
    for _, tag in frames[:10]:
        v.sent(tag)
    assert v.heard(TEXT) == ("Your order", None)


def test_nothing_sent_means_nothing_heard() -> None:
    v = Voicing(1, 8000, 160)
    v.add(_chunks(8000), 8000, 0)
    assert v.heard(TEXT) == ("", None)


def test_resampled_clauses_keep_offsets() -> None:
    v = Voicing(7, 8000, 160)
    first = v.add(_chunks(22050)[:2], 22050, 0)
    second = v.add(_chunks(22050)[2:], 22050, 0)
    frames = first + second + v.finish()
    total = sum(len(p) for p, _ in frames)
    assert abs(total - 4000) <= 160  # 0.5 s at 8 kHz, within a frame of padding
    for _, tag in frames:
        v.sent(tag)
    assert v.all_sent
    assert v.heard(TEXT) == (TEXT[:28], None)
    assert {tag.reply for _, tag in frames} == {7}
