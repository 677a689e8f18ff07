"""Tests for the ferplus builder, on the small release copy in dummy_data/.

Expected labels and distributions are worked out by hand from the votes in
dummy_data/FERPlus/fer2013new.csv (columns: neutral, happiness, surprise,
sadness, anger, disgust, fear, contempt, unknown, NF).
"""

import csv
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ferjax.data import build
from ferjax.labels import EXPRESSIONS
from tfds_builders import manual_data
from tfds_builders.ferplus import ferplus_dataset_builder as ferplus
from tfds_builders.ferplus import vote_rules

DUMMY = pathlib.Path(__file__).parent / 'dummy_data'
FER = pathlib.Path('fer2013') / 'fer2013.csv'
PLUS = pathlib.Path('FERPlus') / 'fer2013new.csv'
SPLITS = ('train', 'validation', 'test')

# Majority label by id, from the votes (lone votes removed first).
MAJORITY = {
  'train': {
    'fer0001742.png': 'happiness',  # 8 of 8 after the two lone votes.
    'fer0000127.png': 'neutral',  # 4 of 10 raw; 4 of 7 without lone votes.
    'fer0003318.png': 'contempt',  # 6 of 10.
    'fer0004410.png': 'sadness',  # 7 of 9.
    'fer0001205.png': 'anger',  # 6 of 10.
    'fer0000056.png': 'fear',  # 7 of 10.
    'row-12': 'happiness',  # fer0000640.png, listed twice.
    'row-13': 'surprise',
    'fer0002231.png': 'disgust',  # 7 of 10.
  },
  'validation': {
    'fer0028912.png': 'happiness',
    'fer0028733.png': 'surprise',
    'fer0030100.png': 'neutral',  # 6 of 10.
  },
  'test': {
    'fer0032455.png': 'contempt',  # 6 of 9.
    'fer0032390.png': 'sadness',
    'fer0034567.png': 'fear',  # 5 of 10 raw; 5 of 7 without lone votes.
    'fer0035001.png': 'anger',
  },
}
# Probability-rule targets of the train rows, by id.
PROBABILITY_TRAIN = {
  'fer0001742.png': {'happiness': 1.0},
  'fer0000127.png': {'neutral': 1.0},  # Unknown (3) is left out.
  'fer0003318.png': {'contempt': 0.75, 'neutral': 0.25},  # NF left out.
  'fer0004410.png': {'sadness': 1.0},  # 7 >= 75% of 9.
  'fer0001205.png': {'anger': 0.6, 'disgust': 0.4},
  'fer0000056.png': {'fear': 0.7, 'surprise': 0.3},
  'row-12': {'happiness': 1.0},
  'row-13': {'surprise': 1.0},
  'fer0002231.png': {'disgust': 0.7, 'anger': 0.3},
  # No majority, but the probability rule keeps these two.
  'fer0000381.png': {'neutral': 0.5, 'surprise': 0.5},
  'fer0003777.png': {'neutral': 3 / 8, 'happiness': 3 / 8, 'anger': 2 / 8},
}


def _examples(builder, split):
  src = builder.as_data_source(split=split)
  return {(ex := src[i])['id'].decode(): ex for i in range(len(src))}


def _csv_rows(path):
  with path.open(newline='') as f:
    return list(csv.reader(f))[1:]


@pytest.fixture(scope='module')
def majority(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build(
    'ferplus', config='majority', manual_dir=DUMMY, data_dir=data_dir
  )


@pytest.fixture(scope='module')
def probability(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  return build.build(
    'ferplus', config='probability', manual_dir=DUMMY, data_dir=data_dir
  )


def test_column_table():
  assert vote_rules.FERPLUS_TO_CANONICAL == (0, 1, 3, 2, 6, 5, 4, 7)
  assert EXPRESSIONS[3] == 'surprise' and EXPRESSIONS[6] == 'anger'


@pytest.mark.parametrize(
  ('votes', 'column'),
  [
    ((0, 8, 1, 0, 0, 0, 0, 1, 0, 0), 1),
    ((4, 1, 1, 1, 0, 0, 0, 0, 3, 0), 0),  # Lone votes decide.
    ((4, 0, 4, 0, 2, 0, 0, 0, 0, 0), 8),  # No majority: unknown.
    ((5, 5, 0, 0, 0, 0, 0, 0, 0, 0), 8),  # Half is not a majority.
    ((2, 0, 0, 0, 0, 0, 0, 0, 8, 0), 8),
    ((1, 0, 0, 0, 0, 0, 0, 0, 2, 7), 9),
    ((1,) * 10, 8),  # Every vote alone: nothing left.
    ((0, 0, 0, 0, 0, 0, 0, 6, 0, 4), 7),
  ],
)
def test_majority_label(votes, column):
  assert vote_rules.majority_label(votes) == column


@pytest.mark.parametrize(
  ('votes', 'taken'),
  [
    ((0, 0, 3, 0, 0, 0, 7, 0, 0, 0), {2: 3, 6: 7}),
    ((3, 3, 0, 0, 2, 0, 0, 0, 2, 0), {0: 3, 1: 3, 4: 2}),
    # Contempt, then the tie of 2 takes neutral and NF; NF is left out.
    ((2, 0, 0, 0, 0, 0, 0, 6, 0, 2), {7: 6, 0: 2}),
    ((6, 0, 0, 0, 0, 0, 0, 0, 4, 0), {0: 6}),
    # Tied with unknown: neutral alone holds only half of the votes.
    ((5, 0, 0, 0, 0, 0, 0, 0, 5, 0), {8: 1}),
    ((4, 2, 2, 2, 0, 0, 0, 0, 0, 0), {8: 1}),  # 4 columns are too many.
    ((2, 0, 0, 0, 0, 0, 0, 0, 2, 6), {9: 6}),  # NF first: kept, then dropped.
    ((2, 2, 2, 2, 2, 0, 0, 0, 0, 0), {8: 1}),
    ((1,) * 10, {8: 1}),
  ],
)
def test_probability_target(votes, taken):
  want = np.zeros(10)
  for column, count in taken.items():
    want[column] = count
  got = vote_rules.probability_target(votes)
  np.testing.assert_allclose(got, want / want.sum())


def test_splits_and_features(majority, probability):
  for builder, train in ((majority, 9), (probability, 11)):
    splits = builder.info.splits
    assert [splits[s].num_examples for s in SPLITS] == [train, 3, 4]
    features = builder.info.features
    assert features['label'].names == list(EXPRESSIONS)
    assert features['image'].shape == (48, 48, 1)
    assert builder.info.supervised_keys == ('image', 'label')
  assert 'label_distribution' not in majority.info.features
  assert probability.info.features['label_distribution'].shape == (8,)


@pytest.mark.parametrize('split', SPLITS)
def test_majority_labels(majority, probability, split):
  names = majority.info.features['label'].names
  got = {k: names[ex['label']] for k, ex in _examples(majority, split).items()}
  assert got == MAJORITY[split]
  if split != 'train':  # Evaluation splits follow the majority rule.
    for key, ex in _examples(probability, split).items():
      assert names[ex['label']] == MAJORITY[split][key]
      want = np.zeros(8, np.float32)
      want[ex['label']] = 1
      np.testing.assert_array_equal(ex['label_distribution'], want)


def test_probability_train_targets(probability):
  got = _examples(probability, 'train')
  assert sorted(got) == sorted(PROBABILITY_TRAIN)
  for key, shares in PROBABILITY_TRAIN.items():
    want = np.zeros(8, np.float32)
    for name, share in shares.items():
      want[EXPRESSIONS.index(name)] = share
    dist = got[key]['label_distribution']
    assert dist.dtype == np.float32
    np.testing.assert_allclose(dist, want, rtol=1e-6)
    # The label is the majority where there is one, else the first of the
    # top classes in FERPlus's column order (neutral before surprise).
    expected = MAJORITY['train'].get(key, 'neutral')
    assert got[key]['label'] == EXPRESSIONS.index(expected)


def test_votes_original_label_and_images(majority):
  """Every kept example carries its own row of both CSV files."""
  fer_rows = _csv_rows(DUMMY / FER)
  plus_rows = _csv_rows(DUMMY / PLUS)
  ids = {}
  for index, row in enumerate(plus_rows):
    name = row[1] if [r[1] for r in plus_rows].count(row[1]) == 1 else ''
    ids[name or f'row-{index}'] = index
  for split in SPLITS:
    for key, ex in _examples(majority, split).items():
      index = ids[key]
      emotion, pixels, usage = fer_rows[index]
      assert plus_rows[index][0] == usage
      assert list(ex['votes']) == [int(v) for v in plus_rows[index][2:]]
      assert ex['original_label'] == int(emotion)
      image = np.array(pixels.split(), np.uint8).reshape(48, 48, 1)
      assert ex['image'].dtype == np.uint8
      np.testing.assert_array_equal(ex['image'], image)


def test_skips_and_drops_are_recorded(majority, probability):
  skipped = majority.info.metadata['skipped']
  assert [(s['split'], s['file']) for s in skipped] == [
    ('train', 'fer2013new.csv:5'),
    ('validation', 'fer2013new.csv:22'),
  ]
  assert majority.info.metadata['dropped'] == {
    'train': {'unknown': 5, 'NF': 1},
    'validation': {'unknown': 1, 'NF': 0},
    'test': {'unknown': 0, 'NF': 1},
  }
  assert probability.info.metadata['dropped']['train'] == {
    'unknown': 3,
    'NF': 1,
  }


def _build(tmp_path, manual_dir, config='majority'):
  builder = ferplus.Builder(
    config=config, data_dir=str(tmp_path / 'tfds'), file_format='array_record'
  )
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return builder


def test_both_files_in_one_folder(tmp_path, majority):
  flat = tmp_path / 'flat'
  flat.mkdir()
  for path in (FER, PLUS):
    shutil.copy(DUMMY / path, flat)
  builder = _build(tmp_path, flat)
  for split in SPLITS:
    assert _examples(builder, split).keys() == _examples(majority, split).keys()


def test_crlf_and_byte_order_mark_are_fine(tmp_path):
  path = tmp_path / 'fer2013new.csv'
  data = (DUMMY / PLUS).read_bytes().replace(b'\n', b'\r\n')
  path.write_bytes(b'\xef\xbb\xbf' + data)
  rows = ferplus.read_ferplus(path)
  assert rows == ferplus.read_ferplus(DUMMY / PLUS)
  assert rows[4] == (
    6,
    'Training',
    'fer0000127.png',
    (4, 1, 1, 1) + (0,) * 4 + (3, 0),
  )


@pytest.fixture
def release(tmp_path):
  """A writable copy of dummy_data."""
  shutil.copytree(DUMMY, tmp_path / 'manual')
  return tmp_path / 'manual'


def _fails(tmp_path, manual_dir, match):
  with pytest.raises(manual_data.ManualDataError, match=match) as info:
    _build(tmp_path, manual_dir)
  assert not ferplus.Builder(data_dir=str(tmp_path / 'tfds')).is_prepared()
  return str(info.value)


def _edit(path, lineno, edit):
  """Replaces line `lineno` (1-based) of `path` by `edit(fields)`."""
  lines = path.read_text().splitlines()
  lines[lineno - 1] = ','.join(edit(lines[lineno - 1].split(',')))
  path.write_text('\n'.join(lines) + '\n')


@pytest.mark.parametrize('missing', [FER, PLUS])
def test_missing_file_names_the_paths_tried(tmp_path, release, missing):
  (release / missing).unlink()
  msg = _fails(tmp_path, release, f'{missing.name} not found')
  assert str(release / missing.name) in msg
  assert str(release / missing) in msg
  assert '--manual_dir' in msg and 'README.md' in msg


def test_both_files_missing_are_both_named(tmp_path):
  (tmp_path / 'other').mkdir()
  (tmp_path / 'other' / 'notes.txt').write_text('x')
  msg = _fails(tmp_path, tmp_path / 'other', 'fer2013.csv not found')
  assert 'fer2013new.csv not found' in msg


def test_empty_manual_dir_shows_the_instructions(tmp_path):
  # TFDS itself rejects an empty or absent manual_dir, with our instructions.
  (tmp_path / 'empty').mkdir()
  with pytest.raises(AssertionError, match='Kaggle'):
    _build(tmp_path, tmp_path / 'empty')


def _pixels(edit):
  def fields(f):
    values = f[1].split()
    return [f[0], ' '.join(edit(values)), f[2]]

  return fields


@pytest.mark.parametrize(
  ('edit', 'match'),
  [
    (_pixels(lambda v: v[:-1]), '2303 pixel values; expected 2304'),
    (_pixels(lambda v: [*v, '0']), '2305 pixel values'),
    (_pixels(lambda v: ['12.5', *v[1:]]), "'12.5' is not an integer in 0"),
    (_pixels(lambda v: [*v[:9], 'x', *v[10:]]), "'x' is not an integer"),
    (_pixels(lambda v: [*v[:-1], '256']), "'256' is not an integer in 0..255"),
    (_pixels(lambda v: ['-1', *v[1:]]), "'-1' is not an integer in 0..255"),
    (lambda f: ['7', *f[1:]], "emotion '7' is not a FER2013 label"),
    (lambda f: ['', *f[1:]], "emotion '' is not a FER2013 label"),
    (lambda f: f[:2], '2 columns; expected 3'),
    (lambda f: [*f[:2], 'Validation'], "unknown Usage 'Validation'"),
  ],
)
def test_bad_fer2013_row_names_file_and_line(tmp_path, release, edit, match):
  _edit(release / FER, 3, edit)
  msg = _fails(tmp_path, release, re.escape(match))
  assert msg.startswith(f'{release / FER}:3: ')


def _vote(column, value):
  return lambda f: [*f[: 2 + column], value, *f[3 + column :]]


@pytest.mark.parametrize(
  ('edit', 'match'),
  [
    (_vote(0, 'x'), "neutral vote count 'x' is not a non-negative integer"),
    (_vote(7, '-1'), "contempt vote count '-1'"),
    (_vote(9, '1.5'), "NF vote count '1.5'"),
    (_vote(3, ''), "sadness vote count ''"),
    (lambda f: f[:-1], '11 columns; expected 12'),
    (lambda f: [*f, '0'], '13 columns; expected 12'),
    (lambda f: ['Test', *f[1:]], "unknown Usage 'Test'"),
  ],
)
def test_bad_ferplus_row_names_file_and_line(tmp_path, release, edit, match):
  _edit(release / PLUS, 7, edit)
  msg = _fails(tmp_path, release, re.escape(match))
  assert msg.startswith(f'{release / PLUS}:7: ')


@pytest.mark.parametrize('path', [FER, PLUS])
def test_wrong_header(tmp_path, release, path):
  _edit(release / path, 1, lambda f: [x.lower() for x in f])
  msg = _fails(tmp_path, release, 'header')
  assert msg.startswith(f'{release / path}:1: ')


@pytest.mark.parametrize(('short', 'long'), [(FER, PLUS), (PLUS, FER)])
def test_row_counts_differ(tmp_path, release, short, long):
  lines = (release / short).read_text().splitlines()
  (release / short).write_text('\n'.join(lines[:-1]) + '\n')
  msg = _fails(tmp_path, release, 'no matching row in the other file')
  # The longer file's last data row (line 27) has no partner.
  assert msg.startswith(f'{release / long}:27: ')
  rows = {short: 25, long: 26}
  assert f'({release / FER}: {rows[FER]} data rows' in msg
  assert f'{release / PLUS}: {rows[PLUS]})' in msg


def test_usage_differs(tmp_path, release):
  _edit(release / PLUS, 17, lambda f: ['PublicTest', *f[1:]])
  msg = _fails(tmp_path, release, "Usage 'PublicTest', but the same row")
  assert msg.startswith(f'{release / PLUS}:17: ')
  assert f"{release / FER}:17 has 'Training'" in msg


def test_empty_label_file(tmp_path, release):
  for path in (FER, PLUS):
    lines = (release / path).read_text().splitlines()
    (release / path).write_text(lines[0] + '\n')
  _fails(tmp_path, release, 'fer2013new.csv has no data rows')
