"""Actor logic as plain classes; actors.wiring wraps them with ray.remote."""
