"""mediaserver: a SIP/RTP media server with the voice-AI pipeline inside it."""

__version__ = "0.1.0"
