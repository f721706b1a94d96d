"""Cross-connect two RTP sessions: the media of a B2BUA bridge.

Each side's decoded audio (out of its jitter buffer, gaps as silence) is played
on the other side's paced sender, resampled when the two legs negotiated codecs
of different rates (a G.722 caller bridged to a G.711 desk). Transcoding through
PCM costs a decode and an encode per frame, but it lets the legs differ in codec
and clock, and the outbound side keeps its own continuous sequence numbers and
timestamps, so neither peer sees a discontinuity when the bridge starts.
"""

from __future__ import annotations

import numpy as np

from mediaserver.codecs.resample import Resampler
from mediaserver.media.session import AudioHandler, RtpSession


def bridge_sessions(a: RtpSession, b: RtpSession) -> None:
    """Send what `a` receives out on `b` and the other way round, from now on.

    Whatever `a` had queued (the agent's last words) is dropped first, so the
    caller hears the other party right away. DTMF is not relayed here (the
    server forwards digits, which arrive by RTP events or SIP INFO).
    """
    a.flush()
    b.flush()
    # What each side sends is now the other party, not an agent: no echo to cancel.
    a.cancel_echo(False)
    b.cancel_echo(False)
    a.on_audio = _forward(a, b)
    b.on_audio = _forward(b, a)


def _forward(source: RtpSession, sink: RtpSession) -> AudioHandler:
    resampler = Resampler(source.sample_rate, sink.sample_rate)

    def forward(pcm: np.ndarray, media_time: float, gap: bool) -> None:
        if not sink.closed:
            sink.play(resampler.process(pcm))

    return forward
