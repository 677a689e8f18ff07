"""Plots, attention maps, Grad-CAM and annotated images.

Evaluation and training (`ferjax.viz.plots`; `ferjax.train` writes them):

    save_eval_plots(workdir, metrics, split, step)
        -> plots/confusion_<split>.png, plots/recall_<split>.png
    save_training_curves(workdir) -> plots/curves.png
    confusion_matrix_figure(cm, class_names, normalize='true')
    per_class_recall_figure(cm, class_names)
    training_curves(workdir)

What a model looks at (`ferjax.viz.attention`):

    attention_maps(model_name, model, variables, images) -> {name: maps}
    grad_cam(model, variables, images, target=None, layer=None)
        -> (B, H, W) maps in [0, 1]

Drawing with OpenCV (`ferjax.viz.draw`):

    overlay(image_rgb, heat, alpha=0.4) -> image_rgb
    save_overlays(directory, images, maps) -> paths
    annotate(image_rgb, rows) -> image_rgb   (face boxes, class, probability)

Figures are matplotlib Figures made without pyplot (Agg, no display);
every file is written to a temporary name and renamed over the target.
"""

from ferjax.models.sown import rescale
from ferjax.viz.attention import attention_maps
from ferjax.viz.attention import cam_layer
from ferjax.viz.attention import grad_cam
from ferjax.viz.draw import annotate
from ferjax.viz.draw import label_color
from ferjax.viz.draw import overlay
from ferjax.viz.draw import row_probability
from ferjax.viz.draw import save_overlays
from ferjax.viz.files import PLOTS_DIR
from ferjax.viz.files import save_figure
from ferjax.viz.files import save_image
from ferjax.viz.files import write_atomic
from ferjax.viz.plots import channel_weights_figure
from ferjax.viz.plots import confusion_matrix_figure
from ferjax.viz.plots import eval_plot_paths
from ferjax.viz.plots import normalize_confusion
from ferjax.viz.plots import per_class_recall_figure
from ferjax.viz.plots import save_eval_plots
from ferjax.viz.plots import save_training_curves
from ferjax.viz.plots import training_curves

__all__ = (
  'PLOTS_DIR',
  'annotate',
  'attention_maps',
  'cam_layer',
  'channel_weights_figure',
  'confusion_matrix_figure',
  'eval_plot_paths',
  'grad_cam',
  'label_color',
  'normalize_confusion',
  'overlay',
  'per_class_recall_figure',
  'rescale',
  'row_probability',
  'save_eval_plots',
  'save_figure',
  'save_image',
  'save_overlays',
  'save_training_curves',
  'training_curves',
  'write_atomic',
)
