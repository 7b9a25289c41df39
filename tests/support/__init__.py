"""Test support shared across the suites: real HTTP servers and a proxy on loopback,
the real agent as a subprocess, and store fixtures."""
