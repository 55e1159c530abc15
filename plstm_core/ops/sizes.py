"""Size arithmetic shared by the ops."""


def next_pow2(n: int) -> int:
    """The smallest power of two ≥ n (1 for n ≤ 1). ``n`` may be any int-like value, e.g. a
    size that ``torch.onnx`` tracing hands over as a 0-dim tensor."""
    return 1 << max(0, (int(n) - 1).bit_length())
