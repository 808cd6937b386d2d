"""Deterministic randomness drawn only from the request's seed.

The same generator as the Rust SDK (``guest-sdk/src/rng.rs``): PCG
``Mcg128Xsl64`` (``rand_pcg::Pcg64Mcg``) seeded with ``rand_core``'s
``seed_from_u64``, so a Python policy and a Rust policy draw the same
sequence from the same seed and every decision replays bit for bit. Pinned
by ``guest-sdk/testdata/rng-golden.json``, checked by both SDKs' tests.
"""

_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_MCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
_PCG32_MUL = 6364136223846793005
_PCG32_INC = 11634580027462260723
_TWO_POW_53_INV = 1.0 / (1 << 53)


def _seed_state(seed: int) -> int:
    # rand_core::SeedableRng::seed_from_u64: four PCG32 outputs, little endian.
    state = seed & _M64
    out = 0
    for k in range(4):
        state = (state * _PCG32_MUL + _PCG32_INC) & _M64
        xorshifted = (((state >> 18) ^ state) >> 27) & 0xFFFFFFFF
        rot = state >> 59
        x = ((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF
        out |= x << (32 * k)
    return out | 1  # Mcg128Xsl64::new forces the low bit


class Rng:
    """A seeded generator; obtain one with ``Request.rng()``."""

    __slots__ = ("_state",)

    def __init__(self, seed: int):
        self._state = _seed_state(seed)

    @classmethod
    def from_seed(cls, seed: int) -> "Rng":
        return cls(seed)

    def next_u64(self) -> int:
        s = (self._state * _MCG_MULTIPLIER) & _M128
        self._state = s
        rot = s >> 122
        xsl = ((s >> 64) ^ s) & _M64
        return ((xsl >> rot) | (xsl << ((64 - rot) & 63))) & _M64

    def next_f64(self) -> float:
        """Uniform in ``[0, 1)`` with 53 bits of precision."""
        return (self.next_u64() >> 11) * _TWO_POW_53_INV

    def below(self, n: int) -> int:
        """Uniform index in ``range(n)`` (Lemire's multiply-shift, as in Rust)."""
        if n <= 0:
            raise ValueError("Rng.below(0)")
        return (self.next_u64() * n) >> 64
