"""The control loop: turns submissions, user operations and attempt outcomes into state."""
