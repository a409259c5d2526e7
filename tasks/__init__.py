"""Stage computations: one module per stage plus shared model and data code."""
