"""One node's replicas, with no sockets, threads or SQL: range descriptors (ranges), replica apply
(replica), the store of a node's groups (store), consistency checks (consistency)."""
