"""Analysis built on the engine and a backend: inspect one position, compare strategies, score a text, text metrics."""
