"""External memories with functional state."""
