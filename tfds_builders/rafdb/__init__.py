"""rafdb: Real-world Affective Faces Database, basic (7-class) subset."""
