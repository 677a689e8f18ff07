"""Test setup: 8 fake CPU devices, and absl flags marked parsed for grain."""

import os

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import flags  # noqa: E402

# grain's worker processes read absl flags.
flags.FLAGS.mark_as_parsed()
