"""Training of the shipped models on the semloc-sim ``train`` drives (never the evaluation map).

- :mod:`~semloc_ros.training.segmenter`: segmenter from scratch (class-balanced cross-entropy, lighting
  augmentation);
- :mod:`~semloc_ros.training.descriptor`: semantic and RGB descriptors (cross-condition triplets, hard negatives);
- :mod:`~semloc_ros.training.data`, :mod:`~semloc_ros.training.augment`, :mod:`~semloc_ros.training.common`.

Entry point: ``semloc train segmenter|semantic|rgb`` (:mod:`semloc_ros.commands.train`).
"""
