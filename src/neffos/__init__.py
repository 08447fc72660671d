"""neffos for Python (work in progress)."""
