"""dfew: Dynamic Facial Expressions in the Wild, single-labelled clips."""
