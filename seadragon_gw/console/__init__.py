"""`seadragon-gw console`: the terminal console (textual, the `console` extra)."""
