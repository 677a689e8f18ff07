"""TFDS dataset builders, one folder each in the `tfds new` layout.

Build one without TensorFlow with `python -m ferjax.data.build NAME`. The
modules beside the folders hold what the builders of manually downloaded
releases share: `manual_data` (errors, checks and skip reports),
`class_folders` (a folder per class) and `clip_folders` (a folder of frames
per video clip).
"""
