"""ferv39k: FERV39K multi-scene video clips, face crops."""
