"""What operators see: metrics, health checks, the live view, JSON logs."""
