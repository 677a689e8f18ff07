r"""Expression prediction for images, folders and videos: faces in, a table out.

    predictor = Predictor.from_workdir('runs/demo')          # a trained run
    predictor = Predictor.from_weights('manet', 'weights/manet_rafdb')
    table = predictor.predict(['photo.jpg', 'folder/', 'clip.mp4', array])

    python -m ferjax.predict --workdir runs/demo photos/ --out results.csv

The package: `predictor` (`Predictor`), `loading` (the model from a run,
converted weights or a .pth), `rows` (result rows, fixed-size batches, the
table), `windows` (clip models on videos), `annotate`, `detect` (face
detectors and crops), `media` (reading inputs) and the command line
(`__main__`).

Inputs (read and checked by `media`): image files; directories (searched
recursively, files sorted, images and videos picked by extension);
video files (every `stride`-th frame); numpy arrays (RGB uint8 (H, W, 3),
float in [0, 1], gray (H, W) or RGBA (H, W, 4), whose alpha is dropped); or
a list mixing them.

Each image or sampled frame goes through the face detector (`detect`, Haar
by default), every face is cropped with `margin`
(`detect.align`) and preprocessed exactly as the model's evaluation data:
`augment.eval_transform` with the run's augment config to uint8, then /255
inside the jitted forward pass. With `detector=None` the inputs are taken
as face crops, as dataset images are: the whole image goes to
`eval_transform`, with no margin. Faces run in batches of a fixed
`batch_size` (the last batch padded), so the forward pass compiles once.
Probabilities are the softmax of the model's 'logits'.

Clip models (`config.clip.segments` = U > 0, e.g. GCSA) take U*V frames at
once: a video gives one row per window of U*V sampled frames (`windows`),
and a still image becomes a clip of U*V copies of itself.

The table (a pandas DataFrame) has one row per face: `input` (path or
'<array i>'), `frame` (video frame index, else NA), `face` (index within
its image or frame, largest first), `x`, `y`, `w`, `h` (the detector's box in
the input's pixels, after EXIF rotation), one probability column per class
name (`ferjax.labels`), `label` (the most probable) and `error` (None, or
why the input or frame gave no prediction). Every input has at least one
row: a missing path, an empty directory, a corrupt or non-image file, an
image above `max_pixels` (refused from its header, before decoding), an
unreadable video or a frame without a face give a row with `error` set while
the other inputs go on. Images larger than `max_detect_side` are shrunk for
detection only; the crops come from the full image.
"""

from ferjax.predict.loading import DATASET_MARGINS
from ferjax.predict.predictor import OPTIONS
from ferjax.predict.predictor import Predictor

__all__ = ('DATASET_MARGINS', 'OPTIONS', 'Predictor')
