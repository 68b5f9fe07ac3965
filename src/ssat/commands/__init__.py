"""Thin command implementations: each wires config -> data -> model -> engine -> run directory."""
