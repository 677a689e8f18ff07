"""Faces in images: detectors with landmarks, and crops that match datasets.

`detect` (the `Face` record, the detector registry, Haar, whole-image and
box crops), `mtcnn` (the default CNN detector, in JAX, with five
landmarks; `mtcnn_nets` its networks and weights, `mtcnn_weights` the
command that converts them) and `crops` (five-point alignment onto a
template, and each dataset's crop convention). It sits beside
`ferjax.data`, below the models, so that dataset builders can align faces
at build time and `ferjax.predict` at inference, with the same code.
"""
