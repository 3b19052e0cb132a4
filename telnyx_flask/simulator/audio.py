"""Generated recordings: a short two-tone WAV, and an MP3 of silent MPEG-1 Layer III frames."""

from __future__ import annotations

import io
import math
import wave
from array import array
from functools import lru_cache

DURATION_SECONDS = 1.5

WAV_RATE = 8000
# Dual-channel recordings keep the caller on the left and the agent on the right.
TONES_HZ = (440.0, 660.0)
AMPLITUDE = 0.3

# MPEG-1 Layer III at 48 kHz and 64 kbit/s: 144 * 64000 / 48000 = 192 bytes per frame exactly,
# so no frame needs a padding byte. Each frame holds 1152 samples (24 ms).
MP3_RATE = 48_000
MP3_BITRATE = 64_000
MP3_SAMPLES_PER_FRAME = 1152
MP3_FRAME_BYTES = 144 * MP3_BITRATE // MP3_RATE
_BITRATE_INDEX = 5  # MPEG-1 Layer III table: 32, 40, 48, 56, 64 kbit/s are indexes 1-5
_SAMPLE_RATE_INDEX = 1  # MPEG-1: 0 = 44.1 kHz, 1 = 48 kHz, 2 = 32 kHz
_MODE_STEREO, _MODE_MONO = 0b00, 0b11
# Side information is 32 bytes for two channels, 17 for one.
_SIDE_INFO_BYTES = {_MODE_STEREO: 32, _MODE_MONO: 17}

CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}


def mp3_frame_header(stereo: bool) -> bytes:
    """The 4-byte header of one MPEG-1 Layer III frame, no CRC, no padding."""
    mode = _MODE_STEREO if stereo else _MODE_MONO
    bits = (
        (0x7FF << 21)  # frame sync: 11 set bits
        | (0b11 << 19)  # MPEG version 1
        | (0b01 << 17)  # Layer III
        | (1 << 16)  # protection bit set: no CRC follows
        | (_BITRATE_INDEX << 12)
        | (_SAMPLE_RATE_INDEX << 10)
        | (0 << 9)  # padding
        | (0 << 8)  # private
        | (mode << 6)
        | (0 << 4)  # mode extension (joint stereo only)
        | (0 << 3)  # copyright
        | (1 << 2)  # original
        | 0  # emphasis: none
    )
    return bits.to_bytes(4, "big")


@lru_cache(maxsize=4)
def mp3_bytes(channels: str = "dual", seconds: float = DURATION_SECONDS) -> bytes:
    """Silent MP3 audio: zeroed side information and main data decode to silence."""
    stereo = channels == "dual"
    header = mp3_frame_header(stereo)
    # All-zero side info: part2_3_length 0 means no Huffman data, so every sample is 0.
    frame = header + bytes(MP3_FRAME_BYTES - len(header))
    frames = math.ceil(seconds * MP3_RATE / MP3_SAMPLES_PER_FRAME)
    return frame * frames


@lru_cache(maxsize=4)
def wav_bytes(channels: str = "dual", seconds: float = DURATION_SECONDS) -> bytes:
    """16-bit PCM WAV with a tone per channel."""
    count = 2 if channels == "dual" else 1
    samples = array("h")
    for n in range(int(seconds * WAV_RATE)):
        for tone in TONES_HZ[:count]:
            samples.append(round(AMPLITUDE * 32767 * math.sin(2 * math.pi * tone * n / WAV_RATE)))
    if samples.itemsize != 2:
        raise RuntimeError("array('h') is not 16-bit on this platform")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(count)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        # WAV is little-endian; array writes native order.
        if array("h", [1]).tobytes() != b"\x01\x00":
            samples.byteswap()
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def recording_bytes(fmt: str, channels: str) -> bytes:
    """The audio served for a recording in `fmt` (mp3 or wav)."""
    return mp3_bytes(channels) if fmt == "mp3" else wav_bytes(channels)
