"""Admin operations (API keys, whitelist, users, registration tokens), one service for every
way in: the HTTP admin routes, the CLI and the admin page."""
