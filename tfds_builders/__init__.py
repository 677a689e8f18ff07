"""TFDS dataset builders, one folder each in the `tfds new` layout.

Build one without TensorFlow with `python -m ferjax.data.build NAME`.
"""
