"""Adapters between a client's API dialect and a backend kind that speaks another one."""
