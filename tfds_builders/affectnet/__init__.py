"""affectnet: AffectNet, manually annotated images, 7 or 8 expressions."""
