"""Running compiled networks: benchmarks now; training and export build on the same pieces."""
