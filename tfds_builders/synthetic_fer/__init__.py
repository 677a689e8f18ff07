"""synthetic_fer: procedurally rendered faces in the seven expressions."""
