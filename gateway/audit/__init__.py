"""The audit log: hash-chained RFC 8785 records, signed Merkle checkpoints, and their
verification. Plain Python: the gateway and the operator both write through it."""
