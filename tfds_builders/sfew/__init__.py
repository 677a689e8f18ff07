"""sfew: Static Facial Expressions in the Wild 2.0, aligned faces."""
