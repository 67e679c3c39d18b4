"""Session stores: where session records live (memory, SQLite, Redis)."""
