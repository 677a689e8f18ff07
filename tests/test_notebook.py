"""notebooks/colab_tpu.ipynb runs top to bottom (smoke settings, CPU)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / 'notebooks'
NOTEBOOK /= 'colab_tpu.ipynb'


def _parameters(nb) -> int:
  (index,) = [
    i
    for i, cell in enumerate(nb.cells)
    if 'parameters' in cell.get('metadata', {}).get('tags', [])
  ]
  return index


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nb.cells[_parameters(nb)].source = (
    'SMOKE = True\n'
    f'WORKDIR = {str(tmp_path / "run")!r}\n'
    f'DATA_DIR = {str(tmp_path / "tfds")!r}\n'
    "REPO = ''\n"
  )
  client = NotebookClient(
    nb,
    timeout=600,
    kernel_name='python3',
    resources={'metadata': {'path': str(NOTEBOOK.parent)}},
  )
  client.execute()
  outputs = [o for cell in nb.cells for o in cell.get('outputs', [])]
  assert not [o for o in outputs if o.get('output_type') == 'error']
  text = ''.join(
    o.get('text', '') + str(o.get('data', {}).get('text/plain', ''))
    for o in outputs
  )
  assert 'backend: cpu' in text and 'test WAR' in text
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(images) == 3  # Curves, confusion matrix, per-class recall.
  assert 'happiness' in text  # The prediction table's class columns.
  assert (tmp_path / 'run' / 'plots' / 'confusion_test.png').is_file()
