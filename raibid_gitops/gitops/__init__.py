"""The config repository: generate, set, verify, render and reconcile it."""
