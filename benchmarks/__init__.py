"""Side-by-side benchmarks against the anchors: `python -m benchmarks NAME [--json]`."""
