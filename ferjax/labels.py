"""The canonical expression order shared by every dataset in ferjax.

AffectNet's order: 7-class datasets use the first seven names, 8-class ones
add contempt. Builders map each dataset's own label ids into this order and
keep the original id as a feature, so cross-dataset evaluation is one config
line.
"""

EXPRESSIONS = (
  'neutral',
  'happiness',
  'sadness',
  'surprise',
  'fear',
  'disgust',
  'anger',
  'contempt',
)
EXPRESSIONS_7 = EXPRESSIONS[:7]


def class_names(num_classes: int) -> tuple[str, ...]:
  """Returns the canonical names of the first `num_classes` expressions."""
  if num_classes not in (7, 8):
    raise ValueError(
      f'num_classes={num_classes}: ferjax datasets have 7 or 8 expression '
      'classes (neutral ... anger, plus contempt for 8).'
    )
  return EXPRESSIONS[:num_classes]
