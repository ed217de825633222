"""Folder sync: the durable action queue, the path mapping and the sync engine."""
