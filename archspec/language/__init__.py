"""The language: spec text → syntax tree, its diagnostics, the expression interpreter and the loader
that follows `use`. No torch here."""
