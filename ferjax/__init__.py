"""ferjax: facial expression recognition in JAX/Flax.

Reimplementations of MA-Net (TIP 2021), MFER (TAFFC 2024), JADFER (TAFFC 2024)
and GCSA (2024) with TFDS builders for the FER datasets, grain input pipelines
and sharded training that runs unchanged on one CPU, GPUs or a TPU pod.
"""

__version__ = '0.1.0'
