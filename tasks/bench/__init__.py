"""What the benchmark measures beside the stages: side-by-side rates of a stage against its own limit."""
