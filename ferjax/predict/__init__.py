r"""Expression prediction for images, folders and videos: faces in, a table out.

    predictor = Predictor.from_workdir('runs/demo')          # a trained run
    predictor = Predictor.from_weights('manet', 'weights/manet_rafdb')
    table = predictor.predict(['photo.jpg', 'folder/', 'clip.mp4', array])

    python -m ferjax.predict --workdir runs/demo photos/ --out results.csv

The package: `predictor` (`Predictor`), `loading` (the model from a run,
converted weights or a .pth, with the crop style it was trained on), `rows`
(result rows, fixed-size batches, the table), `tracking` (face tracks in
videos), `windows` (clip models on videos), `annotate`, `media` (reading
inputs) and the command line (`__main__`). Faces are found and cut out by
`ferjax.faces` (`detect`, `mtcnn`, `crops`).

Inputs (read and checked by `media`): image files; directories (searched
recursively, files sorted, images and videos picked by extension);
video files (every `stride`-th frame); numpy arrays (RGB uint8 (H, W, 3),
float in [0, 1], gray (H, W) or RGBA (H, W, 4), whose alpha is dropped); or
a list mixing them.

Each image or sampled frame goes through the face detector (MTCNN by
default: a box, a score and five landmarks per face; 'haar' and user
detectors by name or as callables), and every face is cut out in the crop
style of the model's training data (`ferjax.faces.crops`: RAF-DB's and
SFEW's five-point alignment, AffectNet's box plus margin, FERPlus's 48 px
grey faces, face.evoLVe's 112 px template for IR-50 weights, ...), which
`loading` reads from the run's `config.data.crop`; runs trained before
that field keep what they were predicted with then, Haar and the margin
crop of `DATASET_MARGINS`. The crop is then
preprocessed exactly as the model's evaluation data:
`augment.eval_transform` with the run's augment config to uint8, then /255
inside the jitted forward pass. With `detector=None` the inputs are taken
as face crops, as dataset images are: the whole image goes to
`eval_transform`; models of whole frames (CAER-S) get that by default.
Faces run in batches of a fixed `batch_size` (the last batch padded), so
the forward pass compiles once. Probabilities are the softmax of the
model's 'logits'.

Videos: faces are tracked across the sampled frames (`tracking`, box
overlap), so that `face` numbers one person through a video. Clip models
(`config.clip.segments` = U > 0, e.g. GCSA) take U*V frames at once: each
person's sampled frames give one row per window of U*V of their crops
(`windows`), and a still image becomes a clip of U*V copies of itself. A
progress bar counts the frames.

The table (a pandas DataFrame) has one row per face: `input` (path or
'<array i>'), `frame` (video frame index, else NA), `face` (in an image,
its index, largest first; in a video, its track number), `x`, `y`, `w`,
`h` (the detector's box in the input's pixels, after EXIF rotation),
`score` (the detector's confidence), the five landmarks `left_eye_x`,
`left_eye_y`, `right_eye_x`, ..., `mouth_right_y` (left and right on
screen; NaN for detectors without landmarks), one probability column per
class name (`ferjax.labels`), `label` (the most probable) and `error`
(None, or why the input or frame gave no prediction). Every input has at
least one row: a missing path, an empty directory, a corrupt or non-image
file, an image above `max_pixels` (refused from its header, before
decoding), an unreadable video or a frame without a face give a row with
`error` set while the other inputs go on. Images larger than
`max_detect_side` are shrunk for detection only; the crops come from the
full image.
"""

from ferjax.predict.loading import DATASET_MARGINS
from ferjax.predict.predictor import OPTIONS
from ferjax.predict.predictor import Predictor

__all__ = ('DATASET_MARGINS', 'OPTIONS', 'Predictor')
