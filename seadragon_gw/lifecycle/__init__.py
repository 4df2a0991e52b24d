"""One request lifecycle for every way in (HTTP, jobs, WebSocket): admit, queue, lease a
backend slot, open the upstream, release."""
