"""A node process's composition root (main) and its client port (client_port)."""
