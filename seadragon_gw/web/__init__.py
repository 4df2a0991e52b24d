"""The browser faces of the gateway: the admin page (`/admin`) and the web chat (`/chat`).

Plain static files (HTML, ES modules, CSS) packaged here under `static/`, served from memory
by `assets.WebAssets`; no build step and nothing fetched from elsewhere, so they work offline.
Every action they take goes through the same HTTP API the CLI and the SDK use.
"""
