"""Request records: what happened to each request, and who hears about it when it ends."""
