"""caer_s: CAER-S, the static-image set of CAER (7 classes, video frames)."""
