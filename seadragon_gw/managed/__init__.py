"""Backends whose process the gateway owns: started on demand, health-checked, stopped when
idle, restarted after a crash, never left behind (issue 9)."""
