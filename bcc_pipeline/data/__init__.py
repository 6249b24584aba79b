"""Plain-Python data handling: scanning, splitting and decoding the image folder (no Dagster)."""
