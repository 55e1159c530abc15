"""Size arithmetic shared by the ops."""


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ n (1 for n ≤ 1)."""
    return 1 << max(0, (n - 1).bit_length())
