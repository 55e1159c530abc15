"""Data sets: the arrow pointing generator, molecules (solubility) and TU-format graphs."""
