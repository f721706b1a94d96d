"""Built-in applications chosen by the Request-URI user."""
