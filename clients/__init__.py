"""Clients of the digitsite REST API (standard library plus Pillow; no Django imports)."""
