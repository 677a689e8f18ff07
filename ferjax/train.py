"""Training and evaluation: the state, the pure steps and the loop.

`train_and_evaluate(config, workdir)` is what `run.py` calls. The train and
eval steps are pure functions jitted once with NamedShardings in and out and
the state donated; the loop only moves batches in and, on log, eval and
checkpoint steps, metrics out. Resume order: the workdir's latest checkpoint,
else `config.init_from` (a ferjax workdir or a PyTorch .pth), else scratch.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from ferjax import checkpointing
from ferjax import losses
from ferjax import models
from ferjax import optim
from ferjax import runtime
from ferjax import sharding
from ferjax import viz
from ferjax import writers
from ferjax.data import device_augment
from ferjax.data import pipeline
from ferjax.evaluate import evaluator as evaluator_lib


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  model_state: Any  # Mutable collections other than params, e.g. batch_stats.
  opt_state: Any

  def variables(self) -> dict:
    return {'params': self.params, **self.model_state}


def init_state(
  rng,
  *,
  model,
  tx,
  image_size: int = 0,
  input_shape: tuple[int, ...] = (),
) -> TrainState:
  """A fresh train state (pure; jitted with the state's shardings).

  The model is initialised on zeros of `input_shape` (`models.input_shape`),
  or of (1, image_size, image_size, 3) when only `image_size` is given.
  """
  shape = input_shape or (1, image_size, image_size, 3)
  images = jnp.zeros(shape, jnp.float32)
  variables = model.init({'params': rng, 'dropout': rng}, images, train=False)
  params = variables.pop('params')
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    model_state=dict(variables),
    opt_state=tx.init(params),
  )


def train_step(
  state, batch, rng, *, model, tx, loss_fn, schedule, augment_cfg=None
):
  """One optimizer step on a global batch; returns (state, metrics).

  Batches from `config.augment.on_device` pipelines carry their sampled
  augmentation in batch['augment'], applied here on the devices
  (`ferjax.data.device_augment`); `augment_cfg` is then the parsed
  `config.augment`.
  """
  step_rng = jax.random.fold_in(rng, state.step)
  images = device_augment.batch_images(batch, augment_cfg)

  def loss_of(params):
    outputs, new_model_state = model.apply(
      {'params': params, **state.model_state},
      images,
      train=True,
      mutable=list(state.model_state),
      rngs={'dropout': step_rng},
    )
    # A soft target (e.g. FERPlus vote distributions) replaces the label.
    loss, aux = loss_fn(outputs, batch.get('target', batch['label']))
    return loss, (outputs['logits'], new_model_state, aux)

  (loss, (logits, new_model_state, aux)), grads = jax.value_and_grad(
    loss_of, has_aux=True
  )(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
    'loss': loss,
    'accuracy': jnp.mean(jnp.argmax(logits, -1) == batch['label']),
    'lr': schedule(state.step),
    'l2_grads': optax.tree.norm(grads),
    'l2_params': optax.tree.norm(params),
    **aux,
  }
  new_state = state.replace(
    step=state.step + 1,
    params=params,
    model_state=dict(new_model_state),
    opt_state=opt_state,
  )
  return new_state, metrics


def jit_train_step(step_fn, state_sharding, mesh):
  """Jits a bound train step once: sharded in and out, state donated."""
  return jax.jit(
    step_fn,
    in_shardings=(state_sharding, sharding.data_sharding(mesh), None),
    out_shardings=(state_sharding, sharding.replicated(mesh)),
    donate_argnums=0,
  )


def resolve_steps(
  config: ml_collections.ConfigDict, num_train: int
) -> tuple[int, int]:
  """(steps per epoch, total steps) from num_epochs or total_steps."""
  steps_per_epoch = num_train // config.batch_size
  if steps_per_epoch < 1:
    raise ValueError(
      f'config.batch_size={config.batch_size} exceeds the {num_train} '
      'training examples; lower it.'
    )
  if config.get('total_steps'):
    return steps_per_epoch, int(config.total_steps)
  return steps_per_epoch, int(round(config.num_epochs * steps_per_epoch))


def load_init_from(config, state: TrainState) -> TrainState:
  """`state` with params and model state from `config.init_from`."""
  name, fields = models.model_fields(config)
  return checkpointing.load_pretrained(
    config.init_from,
    state,
    model_name=name,
    model_fields=fields,
    skip=tuple(config.init_from_skip),
    seed=config.seed,
  )


def _flush_train_metrics(pending, writer, progress, saved=None) -> dict:
  """Averages per-step metrics since the last flush; stops on NaN/Inf.

  `saved` is the step of the newest checkpoint (None: none yet), which the
  error names.
  """
  host = jax.device_get([m for _, m in pending])
  for (step, _), metrics in zip(pending, host, strict=True):
    if not np.isfinite(metrics['loss']):
      kept = (
        f'Checkpoint step {saved} is intact and a rerun resumes from it'
        if saved
        else 'No checkpoint was saved before it'
      )
      raise NonFiniteLossError(
        f'Training loss is {metrics["loss"]} at step {step}. {kept}; lower '
        'the learning rate or check the data, then rerun.'
      )
  mean = {
    f'train/{k}': float(np.mean([m[k] for m in host], dtype=np.float64))
    for k in host[0]
  }
  step = pending[-1][0]
  rate = progress.update(step, mean['train/loss'])
  writer.write(step, mean, extra_scalars={'train/img_per_sec': rate})
  pending.clear()
  return mean


def write_plots(save, *args) -> None:
  """Runs a `ferjax.viz` writer on process 0; a failure is only logged.

  Plots are a by-product: a missing font or a full disk must not stop a
  run, nor lose the metrics and checkpoints already written.
  """
  if jax.process_index() != 0:
    return
  try:
    save(*args)
  except Exception:  # Any failure: logged with its traceback.
    logging.exception(
      'Writing plots with %s failed; the run goes on.',
      getattr(save, '__name__', save),
    )


@dataclasses.dataclass(frozen=True)
class Trainable:
  """A config's model, optimizer, sharded initial state and jitted step."""

  model: Any
  schedule: optim.Schedule
  tx: optax.GradientTransformation
  state: TrainState
  state_sharding: Any
  step_fn: Any  # (state, global batch, rng) -> (state, metrics), jitted.
  num_params: int


def build_trainable(
  config: ml_collections.ConfigDict,
  mesh: jax.sharding.Mesh,
  steps_per_epoch: int,
  total_steps: int,
  init_rng: jax.Array,
) -> Trainable:
  """Everything the train loop (or a benchmark) needs besides data."""
  model = models.create_model(config)
  schedule = optim.make_schedule(config.schedule, steps_per_epoch, total_steps)
  tx = optim.make_optimizer(config.optimizer, schedule)
  init = functools.partial(
    init_state, model=model, tx=tx, input_shape=models.input_shape(config)
  )
  abstract = jax.eval_shape(init, init_rng)
  state_sharding = sharding.state_shardings(abstract, mesh, config.sharding)
  # Init runs once: optimising it costs more compile time (mostly random
  # generators, ~10 s on CPU) than it could ever save.
  state = jax.jit(
    init,
    out_shardings=state_sharding,
    compiler_options={'xla_backend_optimization_level': 0},
  )(init_rng)
  step_fn = jit_train_step(
    functools.partial(
      train_step,
      model=model,
      tx=tx,
      loss_fn=_loss_fn(config),
      schedule=schedule,
      augment_cfg=pipeline.augment_config(config),
    ),
    state_sharding,
    mesh,
  )
  return Trainable(
    model=model,
    schedule=schedule,
    tx=tx,
    state=state,
    state_sharding=state_sharding,
    step_fn=step_fn,
    num_params=sum(x.size for x in jax.tree.leaves(abstract.params)),
  )


class Setup:
  """Everything a run builds before its first step (shared by train/eval)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = writers.prepare_workdir(workdir)
    self.mesh = sharding.make_mesh(config.mesh)
    self.train_data, num_train = pipeline.train_dataset(config)
    self.steps_per_epoch, self.total_steps = resolve_steps(config, num_train)
    init_rng, self.train_rng = jax.random.split(jax.random.key(config.seed))
    self.trainable = build_trainable(
      config, self.mesh, self.steps_per_epoch, self.total_steps, init_rng
    )
    self.model = self.trainable.model
    self.state = self.trainable.state
    self.state_sharding = self.trainable.state_sharding
    logging.info(
      '%s: %s params; %d devices in %d processes, mesh %s; %d steps '
      '(%d per epoch) of batch %d.',
      config.model.name,
      f'{self.trainable.num_params:,}',
      jax.device_count(),
      jax.process_count(),
      dict(self.mesh.shape),
      self.total_steps,
      self.steps_per_epoch,
      config.batch_size,
    )
    self.checkpointer = checkpointing.Checkpointer(
      self.workdir,
      every_steps=config.checkpoint.every_steps,
      keep=config.checkpoint.keep,
      async_save=config.checkpoint.get('async_save', True),
    )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir`, resuming if it holds a checkpoint.

  Returns:
    The results written to workdir/results.json: final and best eval
    metrics, and the step of the best.
  """
  run = Setup(config, workdir)
  ckpt = run.checkpointer
  train_iter = iter(run.train_data)
  # Refuses checkpoints this config cannot continue before writing anything.
  start, state = ckpt.resume(run.state, train_iter, run.total_steps)
  if not start and config.get('init_from'):
    state = load_init_from(config, state)
  ckpt.drop_best_after(start)

  writer = writers.MetricWriter(run.workdir, resume_step=start)
  if start:  # config.json describes the checkpoints: written with the next.
    writer.config_with_next_save(run.workdir, config)
  else:
    writer.write_config(run.workdir, config)
  data_sharding = sharding.data_sharding(run.mesh)
  step_fn = run.trainable.step_fn
  split = config.data.eval_split
  placed = (run.model, run.mesh, run.state_sharding)
  evaluator = evaluator_lib.Evaluator(config, split, *placed)
  # Chooses the best checkpoint when config.data.validation is not `split`.
  validator = evaluator_lib.validator(config, *placed)
  chooser = evaluator_lib.VALIDATION_PREFIX if validator else 'eval'
  eval_every = max(1, round(config.eval_every_epochs * run.steps_per_epoch))
  best_metric = config.best_metric
  best = writers.best_so_far(run.workdir, best_metric, chooser)
  progress = writers.Progress(start, run.total_steps, config.batch_size)
  log_every = config.log_every_steps
  pending, last_eval = [], None

  with runtime.Preemption() as preemption:
    for step in range(start + 1, run.total_steps + 1):
      batch = sharding.global_batch(next(train_iter), data_sharding)
      state, metrics = step_fn(state, batch, run.train_rng)
      pending.append((step, metrics))
      final = step == run.total_steps
      eval_now = step % eval_every == 0 or final
      save_now = ckpt.should_save(step) or final or preemption.requested
      if step % log_every == 0 or eval_now or save_now:
        _flush_train_metrics(pending, writer, progress, ckpt.latest_step())
      if eval_now:
        last_eval = evaluator.run(state)
        record, scored = evaluator_lib.records(last_eval), last_eval
        if validator:
          scored = validator.run(state)
          record.update(evaluator_lib.records(scored, chooser))
        writer.write(step, record)
        write_plots(viz.save_eval_plots, run.workdir, last_eval, split, step)
        logging.info(
          'step %d: eval WAR %.4f UAR %.4f',
          step,
          last_eval['war'],
          last_eval['uar'],
        )
        if scored[best_metric] > best:
          best = scored[best_metric]
          ckpt.save_best(step, state)
          writer.checkpoint_saved()
      if preemption.requested and not save_now:  # SIGTERM came just now.
        if pending:
          _flush_train_metrics(pending, writer, progress, ckpt.latest_step())
        save_now = True
      if save_now:
        ckpt.save(step, state, train_iter, force=True)
        writer.checkpoint_saved()
      if preemption.requested and not final:
        progress.close()
        ckpt.close()
        writer.close()
        logging.warning(
          'SIGTERM: saved step %d; rerun the same command to resume.', step
        )
        return {'preempted_at_step': step}
  progress.close()
  ckpt.close()
  writer.close()
  if last_eval is None:  # Resumed at the end: evaluate the final state.
    last_eval = evaluator.run(state)
    write_plots(
      viz.save_eval_plots, run.workdir, last_eval, split, run.total_steps
    )
  results = writers.summarise(
    run.workdir, best_metric, last_eval, run.total_steps
  )
  selected = evaluator_lib.at_best_validation(
    config, writers.read_metrics(run.workdir)
  )
  if selected:
    results['at_best_validation'] = selected
  writers.write_results(run.workdir, results)
  write_plots(viz.save_training_curves, run.workdir)
  return results


def _loss_fn(config):
  """`config.loss` as a function of (outputs, labels); 'auto' is the
  model's own loss (its spec's)."""
  fields = config.loss.to_dict()
  del fields['name']
  return losses.bind(models.loss_name(config), **fields)
