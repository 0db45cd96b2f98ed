"""Domain-free sample services for the engine's own demo and benchmarks."""
