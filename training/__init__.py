"""Offline training: `python -m training.<task>` trains, calibrates, evaluates and exports one model version.

A task module (`flowers`, `cats_vs_dogs`, `fashion_mnist`, `rps`) reads like a keras.io example: its dataset
from the catalogue, its model-building code, a `Task` and `main`. The rest is a small library, one concept per
module, and no import cycle among them (`make lint` checks it, counting imports inside functions):

- `errors`: the errors a user can fix, reported as one line.
- `splits`, `images`, `idx`, `download`, `layouts`: splits and their seeded rules; image files decoded as the
  service decodes uploads; the IDX format; public downloads; how a dataset lies on disk and splits.
- `augmentation`, `catalogue`: label-preserving random transformations; the datasets, one entry each (labels,
  files, layout, input size, augmentation, backbone).
- `config`, `fitting`, `task`, `arguments`: the frozen run configuration; fitting and its schedules; what a task
  declares (`Task`, `Architecture`); the command line that makes the configuration.
- `model`, `export`, `evaluation`, `calibration`, `ood`, `ood_sets`, `ood_fit`, `plots`, `metadata`: the named
  layers every model keeps, the served graph, its figures, temperature scaling, out-of-distribution scores,
  their test sets and choice, the plots and metadata.json.
- `conformal`, `guarantee`: split-conformal sets; the guarantees fitted on the calibration split (the PAC
  out-of-distribution threshold is `ood.pac_threshold`).
- `store`, `publish`, `run`: the model store written atomically; a trained model to a served version; the
  whole run of `python -m training.<task>`.
- `folder`, `adopt`: commands that make their task: a folder of class folders trained (`scan`, `scan_report`:
  what a folder holds; `review`, `contact_sheet`: the photos to look at again), a Keras model trained elsewhere.
- `transfer`, `efficientnet_lite`, `torch_legacy`: transfer learning on EfficientNet-Lite ImageNet weights.
- `exported`, `quantize`, `recalibrate`, `ood_check`, `compact`: commands on a version already exported.
"""
