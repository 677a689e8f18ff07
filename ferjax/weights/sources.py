"""Where the pretrained checkpoints that configs start from come from.

Nothing is downloaded at run time: a config's `init_from` names a local
file, and when it is missing the error says where to get it.
"""

import pathlib

# File name -> where to download it and what it holds.
KNOWN = {
  'convnext_base_22k_224.pth': (
    'https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth',
    'ConvNeXt-B trained on ImageNet-22k (facebookresearch/ConvNeXt)',
  ),
  'convnext_base_1k_224_ema.pth': (
    'https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224_ema.pth',
    'ConvNeXt-B trained on ImageNet-1k (facebookresearch/ConvNeXt)',
  ),
  'Pretrained_on_MSCeleb.pth.tar': (
    'the Google Drive link in the README of github.com/zengqunzhao/MA-Net',
    'MA-Net pretrained on MS-Celeb-1M',
  ),
  'ir50.pth': (
    'the ir50.pth link in the README of github.com/zczcwh/POSTER (the '
    'face.evoLVe IR-50, also backbone_ir50_ms1m_epoch120.pth)',
    'IR-50 trained on MS-Celeb-1M (face.evoLVe)',
  ),
  'resnet18_msceleb.pth': (
    'the link in the README of github.com/yaoing/DAN',
    'ResNet-18 pretrained on MS-Celeb-1M',
  ),
}


def missing_file_message(path: str) -> str:
  """Says that `path` is missing and, for a known checkpoint, where it is."""
  name = pathlib.Path(path).name
  message = f'config.init_from={path!r} does not exist.'
  if name in KNOWN:
    url, what = KNOWN[name]
    message += (
      f' It is {what}: download it from {url} and point --config.init_from '
      'at it.'
    )
  else:
    message += ' Set --config.init_from to an existing file or workdir.'
  return message
