"""One training run: config, data in, train loop, evaluation, resources, tracking, state."""
