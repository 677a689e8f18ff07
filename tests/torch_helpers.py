"""Shared by the PyTorch parity tests (import only after importorskip)."""

import torch


def randomise_batch_norm(model: torch.nn.Module) -> None:
  """Random BN affine and running statistics, so converting them matters."""
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 2.0)
