"""A slow, straightforward G.722 (64 kbit/s) encoder and decoder for checking FFmpeg's.

Written per sample from the ITU-T G.722 block diagram as laid out in Steve
Underwood's public-domain SpanDSP implementation (which passes the ITU test
vectors): QMF band split, low band 6-bit ADPCM, high band 2-bit ADPCM, the
shared pole/zero predictor (block 4), and the receive QMF. Nothing here is
vectorised or clever, so that it reads like the specification.
"""

from __future__ import annotations

from dataclasses import dataclass, field

QMF = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)
Q6 = (0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858,
      940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0, 0)  # fmt: skip
ILN = (0, 63, 62, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13,
       12, 11, 10, 9, 8, 7, 6, 5, 4, 0)  # fmt: skip
ILP = (0, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41,
       40, 39, 38, 37, 36, 35, 34, 33, 32, 0)  # fmt: skip
WL = (-60, -30, 58, 172, 334, 538, 1198, 3042)
RL42 = (0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0)
ILB = (2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774,
       2834, 2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838,
       3922, 4008)  # fmt: skip
QM4 = (0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240,
       2584, 1200, 0)  # fmt: skip
QM6 = (-136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192,
       -10232, -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576,
       -3168, -2776, -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704,
       14984, 13512, 12280, 11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944,
       4464, 4008, 3576, 3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136)  # fmt: skip
QM2 = (-7408, -1616, 7408, 1616)
WH = (0, -214, 798)
RH2 = (2, 1, 2, 1)
IHN = (0, 1, 0)
IHP = (0, 3, 2)


def sat16(value: int) -> int:
    """Saturate to the int16 range."""
    return max(-32768, min(32767, value))


def sign(value: int) -> int:
    """The reference's ``x >> 15`` on 16-bit values: -1 for negative, else 0."""
    return -1 if value < 0 else 0


@dataclass
class Band:
    """The ADPCM state of one sub-band."""

    s: int = 0  # signal estimate
    sp: int = 0  # pole part of the estimate
    sz: int = 0  # zero part of the estimate
    r: list[int] = field(default_factory=lambda: [0, 0, 0])  # reconstructed signal
    a: list[int] = field(default_factory=lambda: [0, 0, 0])  # pole coefficients
    p: list[int] = field(default_factory=lambda: [0, 0, 0])  # partial reconstruction
    d: list[int] = field(default_factory=lambda: [0] * 7)  # quantised differences
    b: list[int] = field(default_factory=lambda: [0] * 7)  # zero coefficients
    nb: int = 0  # log scale factor
    det: int = 0  # scale factor

    def adapt(self, d: int) -> None:
        """Block 4: update the predictor with the quantised difference `d`.

        Index 0 of each history is the current sample and 1.. the past ones,
        as in the specification's delay lines.
        """
        # RECONS, PARREC.
        self.d[0] = d
        self.r[0] = sat16(self.s + d)
        self.p[0] = sat16(self.sz + d)

        # UPPOL2: second pole coefficient.
        sg = [sign(value) for value in self.p]
        wd1 = sat16(self.a[1] * 4)
        wd2 = min(-wd1 if sg[0] == sg[1] else wd1, 32767)
        a2 = (wd2 >> 7) + (128 if sg[0] == sg[2] else -128) + ((self.a[2] * 32512) >> 15)
        a2 = max(-12288, min(12288, a2))

        # UPPOL1: first pole coefficient, bounded by the new second one.
        a1 = sat16((192 if sg[0] == sg[1] else -192) + ((self.a[1] * 32640) >> 15))
        limit = sat16(15360 - a2)
        a1 = max(-limit, min(limit, a1))

        # UPZERO: sixth-order zero coefficients, nudged toward the sign agreement
        # of the new difference with each past one.
        step = 0 if d == 0 else 128
        b_new = [0] * 7
        for i in range(1, 7):
            toward = step if sign(self.d[i]) == sign(d) else -step
            b_new[i] = sat16(toward + ((self.b[i] * 32640) >> 15))

        # DELAYA: shift the delay lines.
        for i in range(6, 0, -1):
            self.d[i] = self.d[i - 1]
            self.b[i] = b_new[i]
        for i in range(2, 0, -1):
            self.r[i] = self.r[i - 1]
            self.p[i] = self.p[i - 1]
        self.a[1], self.a[2] = a1, a2

        # FILTEP, FILTEZ, PREDIC: the next signal estimate.
        pole1 = (self.a[1] * sat16(2 * self.r[1])) >> 15
        pole2 = (self.a[2] * sat16(2 * self.r[2])) >> 15
        self.sp = sat16(pole1 + pole2)
        self.sz = sat16(sum((self.b[i] * sat16(2 * self.d[i])) >> 15 for i in range(1, 7)))
        self.s = sat16(self.sp + self.sz)


def _scale_low(band: Band, code4: int) -> None:
    # LOGSCL + SCALEL: low band scale factor from the 4 most significant code bits.
    band.nb = max(0, min(18432, ((band.nb * 127) >> 7) + WL[RL42[code4]]))
    wd1 = (band.nb >> 6) & 31
    wd2 = 8 - (band.nb >> 11)
    band.det = (ILB[wd1] << -wd2 if wd2 < 0 else ILB[wd1] >> wd2) << 2


def _scale_high(band: Band, code2: int) -> None:
    # LOGSCH + SCALEH.
    band.nb = max(0, min(22528, ((band.nb * 127) >> 7) + WH[RH2[code2]]))
    wd1 = (band.nb >> 6) & 31
    wd2 = 10 - (band.nb >> 11)
    band.det = (ILB[wd1] << -wd2 if wd2 < 0 else ILB[wd1] >> wd2) << 2


class Encoder:
    """Reference G.722 encoder (64 kbit/s, 16 kHz input)."""

    def __init__(self) -> None:
        self.low = Band(det=32)
        self.high = Band(det=8)
        self.x = [0] * 24

    def encode(self, samples: list[int]) -> bytes:
        """Encode an even number of int16 samples, one byte per pair."""
        out = bytearray()
        for j in range(0, len(samples), 2):
            # Transmit QMF: split into low and high band at 8 kHz.
            self.x = [*self.x[2:], samples[j], samples[j + 1]]
            sumodd = sum(self.x[2 * i] * QMF[i] for i in range(12))
            sumeven = sum(self.x[2 * i + 1] * QMF[11 - i] for i in range(12))
            xlow = (sumeven + sumodd) >> 14
            xhigh = (sumeven - sumodd) >> 14

            # Low band: 6-bit quantiser.
            el = sat16(xlow - self.low.s)
            wd = el if el >= 0 else -(el + 1)
            i = 1
            while i < 30 and wd >= (Q6[i] * self.low.det) >> 12:
                i += 1
            ilow = ILN[i] if el < 0 else ILP[i]
            dlow = (self.low.det * QM4[ilow >> 2]) >> 15
            _scale_low(self.low, ilow >> 2)
            self.low.adapt(dlow)

            # High band: 2-bit quantiser.
            eh = sat16(xhigh - self.high.s)
            wd = eh if eh >= 0 else -(eh + 1)
            mih = 2 if wd >= (564 * self.high.det) >> 12 else 1
            ihigh = IHN[mih] if eh < 0 else IHP[mih]
            dhigh = (self.high.det * QM2[ihigh]) >> 15
            _scale_high(self.high, ihigh)
            self.high.adapt(dhigh)

            out.append((ihigh << 6) | ilow)
        return bytes(out)


class Decoder:
    """Reference G.722 decoder (64 kbit/s, 16 kHz output)."""

    def __init__(self) -> None:
        self.low = Band(det=32)
        self.high = Band(det=8)
        self.x = [0] * 24

    def decode(self, data: bytes) -> list[int]:
        """Decode bytes to int16 samples, two per byte."""
        out: list[int] = []
        for code in data:
            ilow = code & 0x3F
            ihigh = (code >> 6) & 0x03

            # Low band: output uses all 6 bits, the predictor only the top 4.
            rlow = max(-16384, min(16383, self.low.s + ((self.low.det * QM6[ilow]) >> 15)))
            dlow = (self.low.det * QM4[ilow >> 2]) >> 15
            _scale_low(self.low, ilow >> 2)
            self.low.adapt(dlow)

            dhigh = (self.high.det * QM2[ihigh]) >> 15
            rhigh = max(-16384, min(16383, dhigh + self.high.s))
            _scale_high(self.high, ihigh)
            self.high.adapt(dhigh)

            # Receive QMF: recombine the bands into two 16 kHz samples.
            self.x = [*self.x[2:], rlow + rhigh, rlow - rhigh]
            xout2 = sum(self.x[2 * i] * QMF[i] for i in range(12))
            xout1 = sum(self.x[2 * i + 1] * QMF[11 - i] for i in range(12))
            out.append(sat16(xout1 >> 11))
            out.append(sat16(xout2 >> 11))
        return out
