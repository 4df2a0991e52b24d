"""Rate limits and daily quotas per client, checked after auth and routing, before queueing."""
