"""The memory arm: optimizer memory at scale and the largest model per memory budget."""
