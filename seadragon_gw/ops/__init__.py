"""Operations: what the operator sees of the running gateway (queue, health, stats, metrics)."""
