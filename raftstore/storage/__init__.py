"""Storage: MVCC versions on SQLite (mvcc) and the free-space reserve (diskspace)."""
