"""Pure domain logic: job specs, DAG, states, scheduling and retry decisions. No I/O."""
