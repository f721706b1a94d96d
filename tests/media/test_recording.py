"""StereoRecorder and the retention sweep: files appear under their name only when
complete, a pause keeps silence in place, expired recordings are deleted."""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import numpy as np

from mediaserver.media.recording import StereoRecorder, delete_expired


def test_written_beside_its_name_and_renamed_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "call.wav"
    recorder = StereoRecorder(path, 8000)
    recorder.add(0, np.full(160, 1000, np.int16))
    recorder.add(1, np.full(160, -1000, np.int16))
    recorder.tick(160)
    assert not path.exists() and (tmp_path / "rec" / "call.wav.part").exists()
    recorder.close()
    assert path.exists() and not (tmp_path / "rec" / "call.wav.part").exists()
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() == 160


def test_a_pause_records_silence_and_drops_what_was_said(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    recorder = StereoRecorder(path, 8000)
    loud = np.full(160, 3000, np.int16)
    for paused in (False, True, True, False):
        recorder.paused = paused
        recorder.add(0, loud)
        recorder.add(1, loud)
        recorder.tick(160)
    recorder.close()
    with wave.open(str(path)) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    assert len(frames) == 640  # the timeline is whole
    assert np.all(frames[:160] == 3000) and np.all(frames[480:] == 3000)
    assert np.all(frames[160:480] == 0)  # the card number is not in it


def test_expired_recordings_are_deleted_and_files_in_progress_kept(tmp_path: Path) -> None:
    old, new, part = tmp_path / "old.wav", tmp_path / "new.wav", tmp_path / "now.wav.part"
    for path in (old, new, part):
        path.write_bytes(b"RIFF")
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old, (ten_days_ago, ten_days_ago))
    os.utime(part, (ten_days_ago, ten_days_ago))
    assert delete_expired(tmp_path, days=7) == 1
    assert not old.exists() and new.exists() and part.exists()
    assert delete_expired(tmp_path / "missing", days=7) == 0
