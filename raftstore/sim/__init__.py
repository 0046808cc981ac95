"""Deterministic simulation of raftstore's Raft layer (see world.py)."""
