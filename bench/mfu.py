"""FLOPs of a compiled step and model FLOPs utilisation (MFU).

MFU = (FLOPs of one step, from XLA's cost analysis of the lowered program)
x (steps per second) / (the device's peak FLOP/s). The FLOPs are those XLA
counts in the unoptimised HLO (2 per multiply-add of a dot or convolution,
plus elementwise work), per device: a data-parallel step over D devices
runs D times that in all. The optimised program's count is not used: it
follows the backend's rewrites (a dense convolution for a depthwise weight
gradient on CPU; nothing for the convolutions cuDNN runs on GPU).

Peaks are dense (no sparsity), per GPU or TPU chip, in TFLOP/s, from the
vendors' data sheets. The peak a run is held to follows its compute dtype:
bfloat16 runs use the bf16 tensor-core peak; float32 runs use the TF32 peak
on NVIDIA GPUs, because JAX's default matmul precision runs float32 dots and
convolutions as TF32 there, and the bf16 peak on TPUs, whose default
precision runs them as bf16 passes. CPUs have no entry: their MFU is null
unless a peak is given (`--peak_tflops`).
"""

import dataclasses

from ferjax.measure import compiled_flops as compiled_flops


@dataclasses.dataclass(frozen=True)
class Peak:
  """Dense peak TFLOP/s of one device by arithmetic.

  Attributes:
    name: the device, as the table names it.
    bf16: bfloat16 tensor-core (MXU on TPUs) peak.
    tf32: TF32 tensor-core peak; None where there is no such mode.
    f32: plain float32 (CUDA-core / vector) peak; None where unknown.
  """

  name: str
  bf16: float
  tf32: float | None = None
  f32: float | None = None


_H100_SXM = Peak('NVIDIA H100 SXM', bf16=989.0, tf32=494.0, f32=67.0)
# Hopper chips with more memory: the same tensor cores and clocks as H100 SXM.
_H200 = Peak('NVIDIA H200', bf16=989.0, tf32=494.0, f32=67.0)
_GH200 = Peak('NVIDIA GH200', bf16=989.0, tf32=494.0, f32=67.0)

# (lowercase substring of jax's device_kind, peak); the first match wins, so
# more specific names come first.
PEAKS: tuple[tuple[str, Peak], ...] = (
  ('h100 pcie', Peak('NVIDIA H100 PCIe', bf16=756.0, tf32=378.0, f32=51.0)),
  ('gh200', _GH200),
  ('h200', _H200),
  ('h100', _H100_SXM),
  ('a100', Peak('NVIDIA A100', bf16=312.0, tf32=156.0, f32=19.5)),
  ('tpu v6 lite', Peak('TPU v6e', bf16=918.0)),
  ('tpu v6e', Peak('TPU v6e', bf16=918.0)),
  ('tpu v5 lite', Peak('TPU v5e', bf16=197.0)),
  ('tpu v5e', Peak('TPU v5e', bf16=197.0)),
  ('tpu v5p', Peak('TPU v5p', bf16=459.0)),
  ('tpu v5', Peak('TPU v5p', bf16=459.0)),
  ('tpu v4', Peak('TPU v4', bf16=275.0)),
  ('tpu v3', Peak('TPU v3', bf16=123.0)),
)


def find_peak(device_kind: str) -> Peak | None:
  """The table's entry for jax's `device.device_kind`, or None."""
  kind = device_kind.lower()
  for pattern, peak in PEAKS:
    if pattern in kind:
      return peak
  return None


def peak_tflops(
  device_kind: str, platform: str, dtype: str
) -> tuple[float | None, str]:
  """(peak TFLOP/s a `dtype` run on this device is held to, its basis).

  Args:
    device_kind: `jax.devices()[0].device_kind`, e.g. 'NVIDIA H100 80GB
      HBM3' or 'TPU v5 lite'.
    platform: 'gpu', 'tpu' or 'cpu'.
    dtype: the compute dtype, 'bfloat16' or 'float32'.

  Returns:
    The peak, or None with the reason when the table has none.
  """
  peak = find_peak(device_kind)
  if peak is None:
    return None, (
      f'no peak FLOP/s known for {platform} device {device_kind!r}; pass '
      '--peak_tflops'
    )
  if dtype == 'bfloat16' or platform == 'tpu':
    return peak.bf16, f'{peak.name} bf16 dense'
  if peak.tf32 is not None:
    return peak.tf32, f'{peak.name} tf32 dense (JAX default f32 precision)'
  return peak.f32, f'{peak.name} f32'


def mfu(
  flops_per_step: float | None,
  seconds_per_step: float,
  peak: float | None,
) -> float | None:
  """Model FLOPs utilisation, 0 to 1: achieved / peak FLOP/s per device."""
  if not flops_per_step or not peak or seconds_per_step <= 0:
    return None
  return flops_per_step / seconds_per_step / (peak * 1e12)
