"""Small helpers shared by the package and the benchmark scripts (profiling)."""
