"""Cross-lingual transfer: aligned word embeddings and translation."""
