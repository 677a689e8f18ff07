"""Flax Linen layers the models are built from; they never import models.

`torch_nn` has the PyTorch-style building blocks (torch's initialisers,
padding and names); the others are attention blocks (CBAM, MFER's DS
attention, JADFER's JAD attention, GCSA's channel attention, IAL's
transformer), depthwise convolutions with fast CPU gradients,
`live_taps`, which skips the kernel taps of a convolution that only read
padding, and `toeplitz`, which computes a convolution over a small map as
one matrix product on CPU.
"""
