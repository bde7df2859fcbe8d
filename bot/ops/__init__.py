"""Running the process: acked work in flight, and metrics."""
