"""One process's edges: the node loop (loop), peer links (peer), clock checks (clockcheck), WAN
emulation (wan)."""
